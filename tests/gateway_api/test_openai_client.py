"""The official openai client, with only `base_url` changed, talks to the gateway: models, chat, completions,
streaming, usage, sampling options. The gateway here serves for free and generates in process."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from covey.gateway.models import model_id_for_task
from covey.ml import TrainConfig, build_model, default_spec, load_dataset, save_weights, train

from .conftest import World, finalise_task, local_gateway, serve_in_thread


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[OpenAI]:
    with serve_in_thread(local_gateway(world)) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_arena_consensus_model_with_its_price(client: OpenAI, world: World) -> None:
    models = client.models.list().data

    assert [model.id for model in models] == [world.model_id]
    model = client.models.retrieve(world.model_id)
    covey = model.model_extra["covey"]  # type: ignore[index]
    assert covey["task_id"] == world.task_id and covey["kind"] == "text"
    assert covey["pricing"]["host_price_per_1k_tokens"] == 0.02
    assert covey["pricing"]["price_per_request_at_default_max_tokens"] > 0


def test_chat_completion_answers_with_usage(client: OpenAI, world: World) -> None:
    reply = client.chat.completions.create(
        model=world.model_id, messages=[{"role": "user", "content": "Who is Romeo?"}], max_tokens=20, seed=7
    )

    assert reply.object == "chat.completion" and reply.model == world.model_id
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(b"USER:\nWho is Romeo?\n\nASSISTANT:\n")
    assert 0 < reply.usage.completion_tokens <= 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_temperature_zero_is_deterministic_and_a_seed_reproduces_sampling(client: OpenAI, world: World) -> None:
    def ask(**options: object) -> str:
        reply = client.completions.create(model=world.model_id, prompt="ROMEO:\n", max_tokens=24, **options)
        return reply.choices[0].text

    assert ask(temperature=0) == ask(temperature=0)
    assert ask(temperature=1.2, top_p=0.9, seed=42) == ask(temperature=1.2, top_p=0.9, seed=42)


def test_streaming_chat_yields_the_same_text_as_the_whole_answer(client: OpenAI, world: World) -> None:
    messages = [{"role": "user", "content": "Speak, Juliet."}]
    whole = client.chat.completions.create(model=world.model_id, messages=messages, temperature=0, max_tokens=30)

    stream = client.chat.completions.create(
        model=world.model_id,
        messages=messages,
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_streaming_completions_and_stop_sequences(client: OpenAI, world: World) -> None:
    free = client.completions.create(model=world.model_id, prompt="JULIET:\n", temperature=0, max_tokens=40)
    text = free.choices[0].text
    stop = text[5:7]  # a stop sequence the greedy answer is known to contain
    assert len(stop) == 2

    stream = client.completions.create(
        model=world.model_id, prompt="JULIET:\n", temperature=0, max_tokens=40, stop=[stop], stream=True
    )
    pieces = list(stream)

    streamed = "".join(c.choices[0].text for c in pieces if c.choices)
    assert streamed == text[: text.index(stop)]
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_echo_returns_the_prompt_first(client: OpenAI, world: World) -> None:
    reply = client.completions.create(model=world.model_id, prompt="ROMEO:\n", max_tokens=5, echo=True, temperature=0)

    assert reply.choices[0].text.startswith("ROMEO:\n")


def test_a_classifier_consensus_model_answers_a_chat_with_its_label(client: OpenAI, world: World) -> None:
    data = load_dataset("digits")
    spec = default_spec("digits", architecture={"input_dim": 64, "hidden_sizes": [32], "num_classes": 10})
    model = build_model(spec.family, spec.architecture)
    train(model, data, TrainConfig(epochs=3, lr=1e-2, batch_size=64, seed=0), progress=False)
    task_id = finalise_task(
        world.chain, world.deployment, world.arena, world.store, spec, save_weights(model), b"digits"
    )
    pixels, label = data.inputs[-1].reshape(-1), int(data.targets[-1])  # type: ignore[index]

    reply = client.chat.completions.create(
        model=model_id_for_task(task_id),
        messages=[
            {"role": "system", "content": "Classify this handwritten digit from its 64 pixel intensities."},
            {"role": "user", "content": " ".join(f"{value:.4f}" for value in pixels)},
        ],
        temperature=0,
    )

    assert reply.choices[0].message.content == str(label)
    assert reply.usage is not None and reply.usage.completion_tokens == 1
    with pytest.raises(openai.BadRequestError, match="classifies 64 numbers"):
        client.chat.completions.create(
            model=model_id_for_task(task_id), messages=[{"role": "user", "content": "1 2 3"}]
        )
