"""`AllianceSpec`: what an alliance trains (dataset, model, local training, voting thresholds), as canonical JSON.

The creator puts the spec's bytes in the store and its sha256 on chain (`specHash`); every participant
fetches it by that hash. The spec names the dataset only so participants know what features their
private data must have: each participant's data stays in its own process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from covey.alliance.canonical import encode_update
from covey.bounds import UntrustedInputError, loads_json
from covey.errors import ValidationError
from covey.ml import build_model, flatten
from covey.ml.datasets import Dataset, load_dataset

SPEC_FORMAT = "covey-alliance-spec/1"
MAX_SPEC_BYTES = 1 << 20
"""A spec is ~1 KB; one from the store is bounded in size and nesting before it is parsed."""
CLASSIFICATION_DATASETS = ("digits", "mnist", "breast_cancer")


@dataclass(frozen=True)
class AllianceSpec:
    """A model family and config, how each proposer trains locally, and each voter's acceptance thresholds."""

    dataset: str
    family: str = "mlp"
    architecture: dict[str, Any] = field(default_factory=dict)
    local_epochs: int = 1
    lr: float = 0.02
    batch_size: int = 32
    min_score_delta: float = -0.05  # small hospitals: one misclassified patient moves accuracy by 1-2 points
    max_distance_ratio: float = 3.0
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in CLASSIFICATION_DATASETS:
            raise ValidationError(
                f"an alliance trains a classifier on one of {', '.join(CLASSIFICATION_DATASETS)}; got {self.dataset!r}"
            )
        if self.local_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValidationError("local_epochs and batch_size must be >= 1 and lr > 0")

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> AllianceSpec:
        """A logistic-regression spec (an MLP without hidden layers) sized for `dataset`."""
        data = load_dataset(dataset)
        architecture = {
            "input_dim": int(np.prod(data.example_shape)),
            "hidden_sizes": [],
            "num_classes": data.num_classes,
        }
        return cls(dataset=dataset, architecture=architecture, **overrides)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the bytes whose sha256 is the on-chain spec hash."""
        payload = {"format": SPEC_FORMAT, **asdict(self)}
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> AllianceSpec:
        """Parse spec bytes; `ValidationError` for anything that is not a spec of this format."""
        try:
            payload = loads_json(data, max_bytes=MAX_SPEC_BYTES, what="alliance spec")
        except UntrustedInputError as exc:
            raise ValidationError(str(exc)) from exc
        if not isinstance(payload, dict) or payload.pop("format", None) != SPEC_FORMAT:
            raise ValidationError(f"alliance spec is not in format {SPEC_FORMAT}")
        try:
            return cls(**payload)
        except TypeError as exc:
            raise ValidationError(f"alliance spec has unexpected fields: {exc}") from exc

    def build_model(self) -> nn.Module:
        """A model of the spec's family and config, initialised from `init_seed`."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            return build_model(self.family, self.architecture)

    def initial_model(self) -> np.ndarray:
        """The initial global model as a float64 vector."""
        return flatten(self.build_model()).astype(np.float64)

    def initial_model_bytes(self) -> bytes:
        """The canonical bytes of the initial model (float64), whose sha256 is the on-chain initial model hash."""
        return encode_update(self.initial_model(), "float64")

    def check_data(self, data: Dataset) -> None:
        """Raise `ValidationError` unless `data` has the features and labels the model expects."""
        features = int(np.prod(data.example_shape))
        if features != self.architecture.get("input_dim") or data.num_classes != self.architecture.get("num_classes"):
            raise ValidationError(
                f"private data with {features} features and {data.num_classes} classes does not fit "
                f"a model for {self.architecture}"
            )
