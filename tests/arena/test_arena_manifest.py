"""What a task publishes and what it hides: trainers get training data only, validators a key that must fit."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from covey.alliance.spec import AllianceSpec
from covey.arena.manifest import (
    TaskManifest,
    ValidationKey,
    decode_dataset,
    encode_dataset,
    fetch_manifest,
    fetch_training_data,
    held_out_data,
    load_key,
    publish_task,
    save_key,
)
from covey.errors import StorageError, ValidationError
from covey.ml import TaskSpec, default_spec, load_dataset
from covey.storage import open_store
from tests.untrusted import ATTACK_DEPTH, nested_arrays


def test_trainers_get_the_training_split_and_never_a_held_out_example(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    manifest, key = publish_task(default_spec("digits"), store)

    published = fetch_manifest(store, manifest.spec_hash)
    assert published == manifest
    assert str(key.split_seed) not in published.to_bytes().decode()  # the seed is nowhere in public
    assert published.validation_commitment == key.commitment

    training = fetch_training_data(store, published)
    held_out = held_out_data(published, key)
    assert len(training) == published.train_examples and len(held_out) == published.validation_examples
    assert len(training) + len(held_out) == len(load_dataset("digits"))
    train_rows = {row.tobytes() for row in training.inputs}
    shared = sum(row.tobytes() in train_rows for row in held_out.inputs)
    # digits has a handful of exact duplicate images; no held-out example was copied into the training data
    assert shared <= 5


def test_a_wrong_or_tampered_key_is_refused(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    manifest, key = publish_task(default_spec("digits"), store)
    stranger = ValidationKey.generate(default_spec("digits"))
    with pytest.raises(ValidationError, match="does not match"):
        held_out_data(manifest, stranger)
    # A creator who quietly publishes other training data is caught by the complement check.
    other_manifest, _ = publish_task(default_spec("digits"), store)
    forged = manifest.model_copy(update={"train_data": other_manifest.train_data})
    with pytest.raises(ValidationError, match="not the complement"):
        held_out_data(forged, key)


def test_keys_are_private_files_and_a_missing_one_says_what_to_do(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    manifest, key = publish_task(default_spec("breast_cancer"), store)
    path = save_key(tmp_path, manifest.spec_hash, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(tmp_path, manifest.spec_hash) == key
    with pytest.raises(StorageError, match="--key"):
        load_key(tmp_path / "validator-without-key", manifest.spec_hash)


def test_dataset_files_are_reproducible_byte_for_byte() -> None:
    key = ValidationKey.generate(default_spec("shakespeare"))
    split = key.split()
    first, second = encode_dataset(split.public_train), encode_dataset(split.public_train)
    assert first == second
    decoded = decode_dataset(first)
    assert decoded.task == "language" and decoded.targets is None
    assert np.array_equal(decoded.inputs, split.public_train.inputs)
    with pytest.raises(ValidationError):
        decode_dataset(b"not a dataset")


def test_manifests_keys_specs_and_dataset_headers_are_bounded_before_parsing() -> None:
    deep = b'{"spec": ' + nested_arrays(ATTACK_DEPTH) + b"}"
    for parse, what in (
        (TaskManifest.from_bytes, "task manifest"),
        (ValidationKey.from_bytes, "validation key file"),
        (TaskSpec.from_bytes, "task spec"),
        (AllianceSpec.from_bytes, "alliance spec"),
    ):
        with pytest.raises(ValidationError, match=f"{what} (nests more than 64 levels deep|is [0-9,]+ bytes)"):
            parse(deep)
    with pytest.raises(ValidationError, match="task manifest nests more than 64 levels deep"):
        TaskManifest.from_bytes(b'{"spec": ' + nested_arrays(1_000) + b"}")

    header = b'{"__metadata__": ' + nested_arrays(ATTACK_DEPTH) + b"}"
    with pytest.raises(ValidationError, match="not a Covey dataset file: header nests more than 8 levels deep"):
        decode_dataset(len(header).to_bytes(8, "little") + header)
