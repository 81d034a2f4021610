"""Packaged datasets: shapes, deterministic public/private splits, and federated partitions."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from covey.errors import ValidationError
from covey.ml import Split, load_dataset, split_dataset
from covey.ml.datasets import (
    TEXT_CHUNK_CHARS,
    VOCAB_SIZE,
    decode_tokens,
    encode_text,
    partition_dirichlet,
    partition_iid,
    shakespeare_files,
)


@pytest.mark.parametrize(
    ("name", "count", "example_shape", "num_classes"),
    [
        ("digits", 1797, (1, 8, 8), 10),
        ("mnist", 5000, (1, 28, 28), 10),
        ("breast_cancer", 569, (30,), 2),
    ],
)
def test_classification_datasets_load_from_installed_packages(
    name: str, count: int, example_shape: tuple[int, ...], num_classes: int
) -> None:
    data = load_dataset(name)

    assert (len(data), data.example_shape, data.num_classes) == (count, example_shape, num_classes)
    assert data.task == "classification"
    assert data.inputs.dtype == np.float32 and data.targets is not None
    assert set(np.unique(data.targets)) == set(range(num_classes))
    assert np.isfinite(data.inputs).all()
    if name != "breast_cancer":
        assert data.inputs.min() == 0.0 and data.inputs.max() == 1.0


def test_breast_cancer_features_are_standardised() -> None:
    features = load_dataset("breast_cancer").inputs
    assert np.allclose(features.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(features.std(axis=0), 1.0, atol=1e-4)


def test_shakespeare_is_42_plays_of_bytes_read_without_importing_the_package() -> None:
    text = load_dataset("shakespeare")

    assert len(shakespeare_files()) == 42
    assert text.task == "language" and text.num_classes == VOCAB_SIZE == 256
    assert text.inputs.dtype == np.uint8 and text.inputs.shape[1] == TEXT_CHUNK_CHARS
    assert 4.5e6 < text.inputs.size < 5.1e6
    assert text.groups is not None and set(np.unique(text.groups)) == set(range(42))
    assert "HAMLET" in decode_tokens(text.inputs[text.groups == shakespeare_files().index("hamlet_gut.txt")][0])
    assert "shksprdata" not in sys.modules


def test_cached_arrays_cannot_be_changed_by_one_caller_under_another() -> None:
    with pytest.raises(ValueError, match="read-only"):
        load_dataset("digits").inputs[0, 0, 0, 0] = 1.0


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "shakespeare"])
def test_validation_indices_are_disjoint_from_public_training_indices(name: str) -> None:
    data = load_dataset(name)
    split = split_dataset(data, validation_fraction=0.2, seed=7)

    assert np.intersect1d(split.train_indices, split.validation_indices).size == 0
    assert np.union1d(split.train_indices, split.validation_indices).size == len(data)
    assert len(split.public_train) == len(split.train_indices)
    assert np.array_equal(split.private_validation.inputs, data.inputs[split.validation_indices])
    assert 0.15 < len(split.validation_indices) / len(data) < 0.3


def test_the_split_is_a_function_of_the_seed() -> None:
    data = load_dataset("digits")
    first, again, other = (split_dataset(data, 0.2, seed) for seed in (1, 1, 2))

    assert np.array_equal(first.validation_indices, again.validation_indices)
    assert not np.array_equal(first.validation_indices, other.validation_indices)


def test_classification_splits_keep_every_label_in_proportion() -> None:
    split: Split = split_dataset(load_dataset("breast_cancer"), validation_fraction=0.25, seed=0)
    train_share = split.public_train.targets.mean()  # type: ignore[union-attr]
    validation_share = split.private_validation.targets.mean()  # type: ignore[union-attr]
    assert abs(train_share - validation_share) < 0.01


def test_text_validation_holds_out_whole_plays(shakespeare_split: Split) -> None:
    train_plays = set(np.unique(shakespeare_split.public_train.groups))  # type: ignore[arg-type]
    validation_plays = set(np.unique(shakespeare_split.private_validation.groups))  # type: ignore[arg-type]
    assert validation_plays and not train_plays & validation_plays


def test_bad_names_and_fractions_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValidationError, match="validation_fraction"):
        split_dataset(load_dataset("digits"), validation_fraction=1.0)


def test_iid_partitions_cover_every_example_once_in_near_equal_parts() -> None:
    parts = load_dataset("digits").partition_iid(n_parts=4, seed=3)

    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(1797))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition_iid(1797, 4, seed=3), strict=True))
    with pytest.raises(ValidationError):
        partition_iid(3, 4, seed=0)


def _mean_top_label_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[part]).max() / len(part) for part in parts]))


def test_dirichlet_partitions_skew_labels_more_as_alpha_shrinks() -> None:
    data = load_dataset("mnist")
    labels = data.targets
    assert labels is not None

    skewed = data.partition_dirichlet(n_parts=5, alpha=0.1, seed=0, min_part_size=20)
    mixed = data.partition_dirichlet(n_parts=5, alpha=100.0, seed=0)

    for parts in (skewed, mixed):
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert min(map(len, skewed)) >= 20
    assert _mean_top_label_share(labels, skewed) > 0.4 > 0.2 > _mean_top_label_share(labels, mixed)
    again = partition_dirichlet(labels, n_parts=5, alpha=0.1, seed=0, min_part_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))


def test_impossible_dirichlet_requests_are_validation_errors() -> None:
    labels = load_dataset("breast_cancer").targets
    assert labels is not None
    with pytest.raises(ValidationError, match="cannot give"):
        partition_dirichlet(labels, n_parts=10, alpha=0.5, seed=0, min_part_size=100)
    with pytest.raises(ValidationError, match="alpha"):
        partition_dirichlet(labels, n_parts=2, alpha=0.0, seed=0)
    with pytest.raises(ValidationError, match="needs labels"):
        load_dataset("shakespeare").partition_dirichlet(2, 0.5, seed=0)


def test_text_round_trips_through_byte_tokens() -> None:
    line = "To be, or not to be: that is the question."
    tokens = encode_text(line)
    assert tokens.dtype == np.uint8 and len(tokens) == len(line)
    assert decode_tokens(tokens) == line
    assert decode_tokens([0xFF]) == "\ufffd"
