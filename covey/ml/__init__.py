"""Machine learning for every capability: packaged datasets, model families, train/evaluate, safetensors I/O.

A trainer: `spec.load_split().public_train`, `spec.build_model()`, `train(...)`, `save_weights(model)`.
A validator: `score_submission(weights, spec, spec.load_split().private_validation)`.
"""

from __future__ import annotations

from covey.ml.datasets import Dataset, Split, load_dataset, load_split, split_dataset
from covey.ml.evaluate import METRICS, Score, evaluate, score_submission
from covey.ml.models import build_model, parameter_count
from covey.ml.spec import TaskSpec, default_spec
from covey.ml.train import TrainConfig, TrainResult, train
from covey.ml.weights import flatten, load_weights, save_weights, unflatten

__all__ = [
    "METRICS",
    "Dataset",
    "Score",
    "Split",
    "TaskSpec",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "default_spec",
    "evaluate",
    "flatten",
    "load_dataset",
    "load_split",
    "load_weights",
    "parameter_count",
    "save_weights",
    "score_submission",
    "split_dataset",
    "train",
    "unflatten",
]
