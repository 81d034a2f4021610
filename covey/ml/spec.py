"""`TaskSpec`: what a training task asks for (dataset, model family, metric, size limit), as canonical JSON."""

from __future__ import annotations

import json
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from covey.bounds import check_json_bounds
from covey.errors import ModelError, ValidationError
from covey.ml.datasets import Split, load_dataset, split_dataset
from covey.ml.models import build_model, make_config
from covey.ml.train import TrainConfig

DatasetName = Literal["digits", "mnist", "breast_cancer", "shakespeare"]
MetricName = Literal["accuracy", "bits_per_char"]

_LANGUAGE_DATASETS = {"shakespeare"}
MAX_SPEC_BYTES = 1 << 20
"""A spec is ~1 KB; one from the store is bounded in size and nesting before it is parsed."""


class TrainHints(BaseModel):
    """Hyper-parameters that worked for the task creator; trainers may ignore them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)

    def to_train_config(self, seed: int = 0, num_threads: int | None = None) -> TrainConfig:
        """A `TrainConfig` with these hints and the given seed."""
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            weight_decay=self.weight_decay,
            seed=seed,
            num_threads=num_threads,
        )


class TaskSpec(BaseModel):
    """A task: train `family` (starting from `architecture`) on `dataset`; scored by `metric`.

    The public training split and the validators' held-out split both come from
    `split_seed` and `validation_fraction`. Submissions over `size_limit_bytes` score worst.
    `max_eval_tokens` caps how much held-out text a validator scores (language tasks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    dataset: DatasetName
    split_seed: int = 0
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    family: str
    architecture: dict[str, Any] = Field(default_factory=dict)
    metric: MetricName
    size_limit_bytes: int = Field(gt=0)
    baseline_score: float | None = None
    max_eval_tokens: int | None = Field(default=None, ge=1)
    train: TrainHints = Field(default_factory=TrainHints)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        language = self.dataset in _LANGUAGE_DATASETS
        if language != (self.metric == "bits_per_char"):
            raise ValueError(f"dataset {self.dataset} cannot be scored by {self.metric}")
        if language != (self.family == "char_gpt"):
            raise ValueError(f"model family {self.family} does not fit dataset {self.dataset}")
        try:
            make_config(self.family, self.architecture)
        except ModelError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the same spec always hashes the same."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskSpec:
        """Parse a spec fetched from the store; `ValidationError` says what is wrong with it."""
        raw = check_json_bounds(data, max_bytes=MAX_SPEC_BYTES, what="task spec")
        try:
            return cls.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"not a valid task spec: {exc}") from exc

    def load_split(self) -> Split:
        """The task's deterministic split (trainers use only `public_train`)."""
        return split_dataset(load_dataset(self.dataset), self.validation_fraction, self.split_seed)

    def build_model(self) -> Any:
        """A freshly initialised model of the spec's family and architecture."""
        return build_model(self.family, self.architecture)


def default_spec(dataset: str, **overrides: Any) -> TaskSpec:
    """A ready-made spec for one of the packaged datasets; keyword arguments replace fields."""
    presets: dict[str, dict[str, Any]] = {
        "digits": {
            "family": "mlp",
            "architecture": {"input_dim": 64, "hidden_sizes": [128], "num_classes": 10},
            "metric": "accuracy",
            "size_limit_bytes": 512 * 1024,
            "baseline_score": 0.9,
            "train": {"epochs": 20, "lr": 3e-3, "batch_size": 64},
        },
        "mnist": {
            "family": "cnn",
            "architecture": {"in_channels": 1, "image_size": 28, "channels": [8, 16], "num_classes": 10},
            "metric": "accuracy",
            "size_limit_bytes": 1024 * 1024,
            "baseline_score": 0.85,
            "train": {"epochs": 5, "lr": 3e-3, "batch_size": 64},
        },
        "breast_cancer": {
            "family": "mlp",
            "architecture": {"input_dim": 30, "hidden_sizes": [32], "num_classes": 2},
            "metric": "accuracy",
            "size_limit_bytes": 256 * 1024,
            "baseline_score": 0.9,
            "train": {"epochs": 30, "lr": 3e-3, "batch_size": 32},
        },
        "shakespeare": {
            "family": "char_gpt",
            "architecture": {"block_size": 64, "vocab_size": 256, "n_layer": 2, "n_head": 4, "n_embd": 64},
            "metric": "bits_per_char",
            "size_limit_bytes": 4 * 1024 * 1024,
            "baseline_score": 3.5,
            "max_eval_tokens": 100_000,
            "validation_fraction": 0.1,
            "train": {"epochs": 1, "lr": 3e-3, "batch_size": 32, "max_steps": 2000},
        },
    }
    if dataset not in presets:
        raise ValidationError(f"no default spec for dataset {dataset!r}; choose one of {', '.join(presets)}")
    try:
        return TaskSpec.model_validate({"dataset": dataset, **presets[dataset], **overrides})
    except pydantic.ValidationError as exc:
        raise ValidationError(f"not a valid task spec: {exc}") from exc
