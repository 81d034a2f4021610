"""Generation and pricing as plain functions: stop sequences while streaming, greedy determinism, seeds,
nucleus sampling, classifiers answering with labels, and the subsidised price of a request."""

from __future__ import annotations

import pytest
import torch

from covey.gateway.errors import InvalidRequestError
from covey.gateway.inference import (
    ClassifierEngine,
    SamplingParams,
    TextEngine,
    complete,
    count_tokens,
    render_chat,
    sample,
)
from covey.gateway.pricing import quote, subsidy_for
from covey.ml import build_model, load_weights

from .conftest import TINY_GPT, tiny_weights


@pytest.fixture(scope="module")
def engine() -> TextEngine:
    """The tests' consensus model: trained enough to write ASCII, so its text can hold a stop sequence."""
    return TextEngine(load_weights(build_model("char_gpt", TINY_GPT), tiny_weights()).eval())


def pieces_and_result(engine: TextEngine, prompt: str, params: SamplingParams) -> tuple[list[str], object]:
    stream = engine.stream(prompt, params)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            return pieces, done.value


def test_the_streamed_pieces_join_to_the_answer_and_stop_before_the_stop_sequence(engine: TextEngine) -> None:
    greedy = SamplingParams(max_tokens=60, temperature=0)
    full = complete(engine, "ROMEO:\n", greedy).text
    stop = full[20:23]
    assert stop.isascii()

    pieces, result = pieces_and_result(engine, "ROMEO:\n", SamplingParams(60, 0, stop=(stop,)))

    assert "".join(pieces) == result.text == full[: full.index(stop)]  # type: ignore[attr-defined]
    assert result.finish_reason == "stop"  # type: ignore[attr-defined]
    assert stop not in "".join(pieces)


def test_greedy_is_deterministic_a_seed_reproduces_and_length_is_capped(engine: TextEngine) -> None:
    assert complete(engine, "x", SamplingParams(30, 0)) == complete(engine, "x", SamplingParams(30, 0))
    seeded = SamplingParams(30, temperature=1.0, top_p=0.9, seed=5)
    assert complete(engine, "x", seeded) == complete(engine, "x", seeded)
    result = complete(engine, "x", SamplingParams(7, 1.0, seed=1))
    assert result.completion_tokens == 7 and result.finish_reason == "length"
    assert result.prompt_tokens == count_tokens("x")


def test_nucleus_sampling_keeps_only_the_head_of_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    generator = torch.Generator().manual_seed(0)
    drawn = {sample(logits, SamplingParams(1, 1.0, top_p=0.8), generator) for _ in range(200)}
    assert drawn == {0, 1}
    assert sample(logits, SamplingParams(1, 0.0), generator) == 0


def test_a_classifier_answers_with_a_label_and_refuses_the_wrong_number_of_features() -> None:
    torch.manual_seed(0)
    engine = ClassifierEngine(build_model("mlp", {"input_dim": 4, "hidden_sizes": [8], "num_classes": 3}).eval())

    result = complete(engine, "0.1, 0.5 -1 2e-1", SamplingParams(5, 0))

    assert result.text in {"0", "1", "2"} and result.finish_reason == "stop"
    with pytest.raises(InvalidRequestError, match="classifies 4 numbers"):
        complete(engine, "1 2 3", SamplingParams(5, 0))


def test_a_chat_becomes_a_script_for_a_language_model_and_features_for_a_classifier() -> None:
    chat = [("system", "Be brief."), ("user", "Who are you?")]
    assert render_chat(chat, "text") == "SYSTEM:\nBe brief.\n\nUSER:\nWho are you?\n\nASSISTANT:\n"
    assert render_chat([("system", "classify"), ("user", "1 2 3")], "classifier") == "1 2 3"


def test_the_agent_pays_cost_times_one_minus_subsidy_and_the_treasury_the_rest() -> None:
    price = quote(price_per_1k_atomic=20_000, max_tokens=100, subsidy_bps=5_000)

    assert price.host_cost_atomic == 2_000
    assert price.price_atomic == 1_000
    assert price.subsidy_atomic == subsidy_for(1_000, 5_000) == 1_000
    assert quote(1, 1, 0).price_atomic == 1  # never free: x402 has no zero payments
    with pytest.raises(ValueError):
        quote(20_000, 100, 9_500)
