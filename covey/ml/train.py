"""`train()`: one plain, seeded training loop for classifiers and character GPTs.

Same model init, data, config and thread count give bitwise-identical weights: the loop
seeds torch, draws batches from its own generator, and turns on deterministic algorithms.
Set `num_threads=1` when a run must match one made on another machine (the Compute verifier).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covey.errors import ModelError, ValidationError
from covey.ml._progress import progress_bar
from covey.ml.datasets import Dataset


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    max_steps: int | None = None  # stop early after this many optimiser steps
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max gradient norm; None turns clipping off
    num_threads: int | None = None  # torch threads while training; None keeps the current setting
    deterministic: bool = True  # torch.use_deterministic_algorithms for the duration

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValidationError(
                f"need epochs >= 1, batch_size >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValidationError(f"max_steps must be at least 1, got {self.max_steps}")


@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    final_loss: float  # mean loss over the last few steps
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per step


def train(model: nn.Module, data: Dataset, config: TrainConfig | None = None, progress: bool = True) -> TrainResult:
    """Train `model` in place on `data` with AdamW and return what happened.

    Classification data trains with cross-entropy over shuffled mini-batches, one pass
    per epoch. Language data trains on random `block_size` windows; an epoch is as many
    steps as it takes to draw about as many tokens as the data holds.
    """
    config = config or TrainConfig()
    steps_per_epoch, next_batch = _batches(model, data, config)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    losses: list[float] = []
    examples_seen = 0
    started = time.perf_counter()
    with _reproducible(config):
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        model.train()
        with progress_bar(progress, f"train {data.name}", total_steps) as advance:
            for step in range(total_steps):
                inputs, targets = next_batch(step % steps_per_epoch, generator)
                logits = model(inputs)
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                losses.append(loss.item())
                examples_seen += len(inputs)
                advance(f"loss {losses[-1]:.3f}")
        model.eval()
    tail = losses[-10:]
    return TrainResult(
        steps=len(losses),
        examples_seen=examples_seen,
        final_loss=sum(tail) / len(tail) if tail else math.nan,
        seconds=time.perf_counter() - started,
        losses=losses,
    )


BatchFn = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _batches(model: nn.Module, data: Dataset, config: TrainConfig) -> tuple[int, BatchFn]:
    """Steps per epoch and a function `(step_in_epoch, generator) -> (inputs, targets)`."""
    if len(data) == 0:
        raise ValidationError(f"cannot train on an empty {data.name} dataset")
    if data.task == "language":
        block_size = getattr(getattr(model, "config", None), "block_size", None)
        if block_size is None:
            raise ModelError(f"{type(model).__name__} is not a language model (no config.block_size)")
        tokens = torch.from_numpy(data.inputs.astype(np.int64))
        window = min(int(block_size), tokens.size(1) - 1)
        offsets = torch.arange(window + 1)
        steps_per_epoch = max(1, math.ceil(tokens.numel() / (config.batch_size * window)))

        def language_batch(_: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            rows = torch.randint(tokens.size(0), (config.batch_size, 1), generator=generator)
            starts = torch.randint(tokens.size(1) - window, (config.batch_size, 1), generator=generator)
            windows = tokens[rows, starts + offsets]
            return windows[:, :-1], windows[:, 1:]

        return steps_per_epoch, language_batch

    if data.targets is None:
        raise ValidationError(f"{data.name} has no labels to train a classifier on")
    inputs = torch.from_numpy(np.ascontiguousarray(data.inputs, dtype=np.float32))
    targets = torch.from_numpy(data.targets.astype(np.int64))
    count = len(inputs)
    steps_per_epoch = math.ceil(count / config.batch_size)
    order = torch.arange(count)

    def classification_batch(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal order
        if step == 0:  # a fresh shuffle at the start of every epoch
            order = torch.randperm(count, generator=generator)
        picked = order[step * config.batch_size : (step + 1) * config.batch_size]
        return inputs[picked], targets[picked]

    return steps_per_epoch, classification_batch


@contextlib.contextmanager
def _reproducible(config: TrainConfig) -> Iterator[None]:
    """Seed torch and pin its algorithms and threads for the block, then put everything back."""
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    # fork_rng restores the caller's global RNG afterwards; dropout draws from it inside.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        torch.use_deterministic_algorithms(config.deterministic)
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_deterministic)
            torch.set_num_threads(previous_threads)
