"""Fixtures for the ML tests: one torch thread, packaged splits, and a digits MLP trained once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from covey.ml import Split, TaskSpec, TrainConfig, default_spec, save_weights, train


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than two (no sync cost), and it keeps runs comparable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass
class TrainedDigits:
    spec: TaskSpec
    split: Split
    model: nn.Module
    weights: bytes


@pytest.fixture(scope="session")
def digits_spec() -> TaskSpec:
    return default_spec("digits", architecture={"input_dim": 64, "hidden_sizes": [64], "num_classes": 10})


@pytest.fixture(scope="session")
def digits_split(digits_spec: TaskSpec) -> Split:
    return digits_spec.load_split()


@pytest.fixture(scope="session")
def trained_digits(digits_spec: TaskSpec, digits_split: Split) -> TrainedDigits:
    """A digits MLP trained for a second or two, shared by the weights and scoring tests."""
    torch.manual_seed(0)
    model = digits_spec.build_model()
    train(model, digits_split.public_train, TrainConfig(epochs=8, lr=5e-3, seed=0, num_threads=1), progress=False)
    return TrainedDigits(digits_spec, digits_split, model, save_weights(model))


@pytest.fixture(scope="session")
def shakespeare_split() -> Split:
    return default_spec("shakespeare").load_split()
