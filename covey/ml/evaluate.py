"""Metrics, `evaluate()` and `score_submission()`: turning a model, or untrusted weights, into a score.

- `accuracy` (classification): share of correct labels, higher is better, worst 0.0.
- `bits_per_char` (language): mean next-byte cross-entropy / ln 2, lower is better, worst 8.0
  (log2 256, a uniform guess over bytes). Worse-than-uniform models are clamped to 8.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covey.errors import ModelError, ValidationError
from covey.ml._progress import progress_bar
from covey.ml.datasets import Dataset
from covey.ml.models import DATA_BOUND_FIELDS, build_model, make_config, parameter_count
from covey.ml.spec import TaskSpec
from covey.ml.weights import load_weights, read_architecture


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    worst: float

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` beats score `b`."""
        return a > b if self.higher_is_better else a < b


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", higher_is_better=True, worst=0.0),
    "bits_per_char": Metric("bits_per_char", higher_is_better=False, worst=8.0),
}


@dataclass(frozen=True)
class Score:
    """A submission's score. `valid` is false, `value` the metric's worst and `reason` set when it was refused."""

    metric: str
    value: float
    valid: bool
    reason: str | None = None
    parameters: int | None = None


def get_metric(name: str) -> Metric:
    """The metric called `name`; `ValidationError` for an unknown one."""
    if name not in METRICS:
        raise ValidationError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    metric: str,
    *,
    batch_size: int = 256,
    max_tokens: int | None = None,
    progress: bool = False,
) -> float:
    """The model's `metric` on `data` (may be NaN if the model outputs NaN).

    Language data is scored on non-overlapping windows of the model's `block_size`;
    `max_tokens` keeps an evenly spread subset of windows so a validator's cost is bounded.
    """
    get_metric(metric)
    was_training = model.training
    model.eval()
    try:
        if metric == "accuracy":
            return _accuracy(model, data, batch_size, progress)
        return _bits_per_char(model, data, batch_size, max_tokens, progress)
    finally:
        model.train(was_training)


def score_submission(
    weights: bytes,
    spec: TaskSpec,
    validation_data: Dataset,
    *,
    progress: bool = False,
) -> Score:
    """Score untrusted weights for `spec` on the validator's held-out data; never raises for bad weights.

    The submission may resize its model within the family (its safetensors metadata names
    the config) but not change the fields the dataset fixes. Oversized, malformed, mismatched
    or NaN submissions get the metric's worst value, `valid=False` and a reason.
    """
    metric = get_metric(spec.metric)

    def refused(reason: str, parameters: int | None = None) -> Score:
        return Score(spec.metric, metric.worst, valid=False, reason=reason, parameters=parameters)

    if len(weights) > spec.size_limit_bytes:
        return refused(f"weights file has {len(weights)} bytes, over the task's limit of {spec.size_limit_bytes}")
    try:
        family, submitted_config = read_architecture(weights, spec.size_limit_bytes)
    except ModelError as exc:
        return refused(str(exc))
    if family is not None and family != spec.family:
        return refused(f"weights are for model family {family}, the task asks for {spec.family}")
    config = {**spec.architecture, **(submitted_config or {})}
    task_config = make_config(spec.family, spec.architecture)
    for name in DATA_BOUND_FIELDS[spec.family]:
        if config.get(name, getattr(task_config, name)) != getattr(task_config, name):
            return refused(f"{name} is fixed by the dataset at {getattr(task_config, name)}, got {config[name]}")
    try:
        # Checking a config on the meta device allocates nothing, so a huge claimed model costs nothing.
        with torch.device("meta"):
            parameters = parameter_count(build_model(spec.family, config))
    except (ModelError, RuntimeError, ValueError, OverflowError, TypeError) as exc:
        return refused(f"model config cannot be built: {exc}")
    if parameters * 4 > spec.size_limit_bytes:
        return refused(f"config has {parameters} parameters, over the task's size limit", parameters)
    try:
        model = load_weights(build_model(spec.family, config), weights, spec.size_limit_bytes)
    except ModelError as exc:
        return refused(str(exc), parameters)
    try:
        value = evaluate(model, validation_data, spec.metric, max_tokens=spec.max_eval_tokens, progress=progress)
    except (ModelError, RuntimeError, ValueError) as exc:
        return refused(f"evaluation failed: {exc}", parameters)
    if not math.isfinite(value):
        return refused(f"evaluation gave {value}", parameters)
    if not metric.higher_is_better:
        value = min(value, metric.worst)
    return Score(spec.metric, value, valid=True, parameters=parameters)


def _accuracy(model: nn.Module, data: Dataset, batch_size: int, progress: bool) -> float:
    if data.targets is None:
        raise ValidationError(f"{data.name} has no labels to measure accuracy on")
    if len(data) == 0:
        raise ValidationError(f"cannot evaluate on an empty {data.name} dataset")
    inputs = torch.from_numpy(np.ascontiguousarray(data.inputs, dtype=np.float32))
    targets = torch.from_numpy(data.targets.astype(np.int64))
    correct = 0
    starts = range(0, len(inputs), batch_size)
    with progress_bar(progress, f"evaluate {data.name}", len(starts)) as advance:
        for start in starts:
            logits = model(inputs[start : start + batch_size])
            if not bool(torch.isfinite(logits).all()):
                return math.nan
            correct += int((logits.argmax(dim=-1) == targets[start : start + batch_size]).sum())
            advance("")
    return correct / len(inputs)


def _bits_per_char(model: nn.Module, data: Dataset, batch_size: int, max_tokens: int | None, progress: bool) -> float:
    block_size = getattr(getattr(model, "config", None), "block_size", None)
    if block_size is None:
        raise ModelError(f"{type(model).__name__} is not a language model (no config.block_size)")
    if data.task != "language" or len(data) == 0:
        raise ValidationError(f"{data.name} is not a non-empty text dataset")
    windows = _windows(data.inputs, min(int(block_size), data.inputs.shape[1] - 1))
    if max_tokens is not None:
        keep = max(1, min(len(windows), max_tokens // (windows.size(1) - 1)))
        windows = windows[np.linspace(0, len(windows) - 1, keep).round().astype(np.int64)]
    total_nats = 0.0
    total_tokens = 0
    starts = range(0, len(windows), batch_size)
    with progress_bar(progress, f"evaluate {data.name}", len(starts)) as advance:
        for start in starts:
            batch = windows[start : start + batch_size]
            logits = model(batch[:, :-1])
            nats = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum")
            total_nats += float(nats)
            total_tokens += batch[:, 1:].numel()
            advance(f"{total_nats / total_tokens / math.log(2):.3f} bpc")
    return total_nats / total_tokens / math.log(2)


def _windows(chunks: np.ndarray, window: int) -> torch.Tensor:
    """Non-overlapping `(window + 1)`-token slices of every chunk: each byte is a target once."""
    per_chunk = (chunks.shape[1] - 1) // window
    starts = np.arange(per_chunk) * window
    index = starts[:, None] + np.arange(window + 1)[None, :]
    slices = chunks[:, index].reshape(-1, window + 1)
    return torch.from_numpy(slices.astype(np.int64))
