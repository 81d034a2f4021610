"""Model families and the training loop: real learning in seconds, and bitwise-reproducible runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from covey.errors import ModelError
from covey.ml import Split, TrainConfig, build_model, evaluate, parameter_count, train
from covey.ml.datasets import decode_tokens, encode_text, load_split
from covey.ml.models import CharGPT, config_dict, family_of
from covey.ml.weights import flatten


@pytest.mark.parametrize(
    ("family", "config", "inputs", "output_shape"),
    [
        ("mlp", {"input_dim": 64, "hidden_sizes": [32, 16]}, torch.zeros(5, 1, 8, 8), (5, 10)),
        ("cnn", {"image_size": 28, "channels": [4, 8]}, torch.zeros(5, 1, 28, 28), (5, 10)),
        ("char_gpt", {"block_size": 16, "n_embd": 32}, torch.zeros(5, 16, dtype=torch.long), (5, 16, 256)),
    ],
)
def test_every_family_builds_from_a_plain_dict(
    family: str, config: dict[str, object], inputs: torch.Tensor, output_shape: tuple[int, ...]
) -> None:
    model = build_model(family, config)

    assert model(inputs).shape == output_shape
    assert family_of(model) == family
    assert build_model(family, config_dict(model)).state_dict().keys() == model.state_dict().keys()
    assert parameter_count(model) == sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(
    ("family", "config", "message"),
    [
        ("transformer", {}, "unknown model family"),
        ("mlp", {"hidden": [3]}, "unknown fields"),
        ("mlp", {"hidden_sizes": [0]}, "positive integers"),
        ("mlp", {"input_dim": True}, "positive integer"),
        ("cnn", {"image_size": 8, "channels": [4, 4, 4, 4]}, "cannot be halved"),
        ("char_gpt", {"n_embd": 30, "n_head": 4}, "multiple of n_head"),
        ("char_gpt", {"dropout": 1.5}, r"\[0, 1\)"),
    ],
)
def test_bad_configs_are_model_errors_that_say_which_field(
    family: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(family, config)


def test_a_digits_mlp_passes_90_percent_validation_accuracy_in_seconds(digits_split: Split) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", {"input_dim": 64, "hidden_sizes": [64]})

    result = train(model, digits_split.public_train, TrainConfig(epochs=8, lr=5e-3), progress=False)

    assert result.steps == 8 * math.ceil(len(digits_split.public_train) / 64)
    assert result.losses[-1] < result.losses[0]
    assert evaluate(model, digits_split.private_validation, "accuracy") > 0.9
    assert result.seconds < 20


def test_a_small_cnn_learns_mnist() -> None:
    split = load_split("mnist", validation_fraction=0.2, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", {"image_size": 28, "channels": [8, 16]})

    train(model, split.public_train, TrainConfig(epochs=2, lr=3e-3), progress=False)

    assert evaluate(model, split.private_validation, "accuracy") > 0.85


def test_a_breast_cancer_mlp_learns() -> None:
    split = load_split("breast_cancer", validation_fraction=0.25, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", {"input_dim": 30, "hidden_sizes": [16], "num_classes": 2})

    train(model, split.public_train, TrainConfig(epochs=10, lr=3e-3, batch_size=32), progress=False)

    assert evaluate(model, split.private_validation, "accuracy") > 0.9


def test_a_char_gpt_beats_the_uniform_guess_after_a_few_hundred_steps(shakespeare_split: Split) -> None:
    torch.manual_seed(0)
    model = build_model("char_gpt", {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32})
    distinct_chars = len(np.unique(shakespeare_split.public_train.inputs))

    result = train(
        model, shakespeare_split.public_train, TrainConfig(lr=3e-3, batch_size=32, max_steps=250), progress=False
    )
    bits_per_char = evaluate(model, shakespeare_split.private_validation, "bits_per_char", max_tokens=20_000)

    assert result.steps == 250
    assert bits_per_char < math.log2(distinct_chars) - 2.0  # uniform over the ~80 characters seen: 6.3 bits
    assert isinstance(model, CharGPT)
    sample = model.generate(torch.from_numpy(encode_text("ROMEO.\n")).long()[None], 20, top_k=10)
    assert sample.shape == (1, 27) and decode_tokens(sample[0].numpy()).startswith("ROMEO.\n")


def _train_digits(seed: int, dropout: float = 0.2) -> np.ndarray:
    split = load_split("digits", seed=0)
    torch.manual_seed(123)  # the same initial weights every time; the run's own seed drives the rest
    model = build_model("mlp", {"input_dim": 64, "hidden_sizes": [32], "dropout": dropout})
    train(model, split.public_train, TrainConfig(epochs=2, seed=seed, num_threads=1), progress=False)
    return flatten(model)


def test_the_same_seed_gives_bitwise_identical_weights() -> None:
    first, again, other_seed = _train_digits(seed=5), _train_digits(seed=5), _train_digits(seed=6)

    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other_seed.tobytes()


def test_training_puts_back_global_torch_state(digits_split: Split) -> None:
    model = build_model("mlp", {"input_dim": 64, "dropout": 0.5})
    torch.manual_seed(99)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(99)
    threads = torch.get_num_threads()

    train(model, digits_split.public_train, TrainConfig(max_steps=3, seed=1, num_threads=2), progress=False)

    assert torch.rand(1) == expected_next_draw
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_max_steps_stops_training_early(digits_split: Split) -> None:
    model = build_model("mlp", {"input_dim": 64})
    result = train(model, digits_split.public_train, TrainConfig(epochs=50, max_steps=7), progress=True)
    assert result.steps == len(result.losses) == 7
    assert result.examples_seen == 7 * 64


def test_a_classifier_cannot_train_on_text(shakespeare_split: Split) -> None:
    with pytest.raises(ModelError, match="not a language model"):
        train(build_model("mlp", {}), shakespeare_split.public_train, TrainConfig(max_steps=1), progress=False)
