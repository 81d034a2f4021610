"""What a task publishes and what it keeps secret: the public `TaskManifest` and the validators' `ValidationKey`.

How validation data stays away from trainers:
- The creator draws a secret split seed (and a nonce) into a `ValidationKey`. From it the dataset is split
  into a public training part and a held-out validation part.
- Only the training part goes to the artifact store (`train_data`, safetensors arrays). The manifest names
  it and carries `validation_commitment = sha256(key)`, never the seed; the manifest's sha256 is the
  task's on-chain `specHash`. The spec inside has `split_seed = 0`: Arena tasks ignore it.
- The key file reaches validators out of band (`covey arena create-task` writes it under the creator's
  `COVEY_HOME/arena/keys/`; a validator imports it with `covey arena validate --key FILE`). A validator
  checks it against the commitment and re-derives the training part to check that `train_data` holds no
  validation example, so all honest validators score on the same held-out examples.
Limit: the packaged datasets are public, so a cheater who trains on the *whole* public dataset also sees
the held-out examples. The split keeps honest trainers blind and makes the leak detectable; real
secrecy needs data that only the creator and validators hold (the key file can carry it the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load as load_arrays

from covey.bounds import UntrustedInputError, check_json_bounds, loads_json
from covey.errors import StorageError, ValidationError
from covey.ml import Dataset, Split, TaskSpec, load_dataset, split_dataset
from covey.storage import ArtifactStore, sha256_hex

MAX_MANIFEST_BYTES = 1 << 20
MAX_KEY_BYTES = 64 * 1024
MAX_TRAIN_DATA_BYTES = 512 << 20
# A dataset file's header is a flat metadata map and one small object per array: 3 levels deep.
MAX_DATASET_HEADER_DEPTH = 8


class ValidationKey(BaseModel):
    """The secret that defines a task's held-out split; only the creator and its validators hold it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    dataset: str
    validation_fraction: float = Field(gt=0, lt=1)
    split_seed: int = Field(ge=0, lt=2**63)
    nonce: str = Field(pattern=r"^[0-9a-f]{64}$")  # stops anyone guessing the seed from the commitment

    @classmethod
    def generate(cls, spec: TaskSpec) -> ValidationKey:
        """A fresh random key for `spec`'s dataset and validation fraction."""
        return cls(
            dataset=spec.dataset,
            validation_fraction=spec.validation_fraction,
            split_seed=secrets.randbelow(2**63),
            nonce=secrets.token_hex(32),
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON: the bytes the commitment hashes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ValidationKey:
        """Parse a key file (bounded in size and nesting first); `ValidationError` says what is wrong."""
        raw = check_json_bounds(data, max_bytes=MAX_KEY_BYTES, what="validation key file")
        try:
            return cls.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"not a validation key file: {exc}") from exc

    @property
    def commitment(self) -> str:
        """sha256 of the canonical key, published in the manifest."""
        return sha256_hex(self.to_bytes())

    def split(self) -> Split:
        """The task's split: the public training part and the secret held-out part."""
        return split_dataset(load_dataset(self.dataset), self.validation_fraction, self.split_seed)


class TaskManifest(BaseModel):
    """The public description of a task; its sha256 is the on-chain `specHash`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    spec: TaskSpec
    train_data: str = Field(pattern=r"^[0-9a-f]{64}$")  # sha256 of the public training arrays in the store
    train_examples: int = Field(ge=1)
    validation_examples: int = Field(ge=1)
    validation_commitment: str = Field(pattern=r"^[0-9a-f]{64}$")

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskManifest:
        """Parse a manifest from the store (bounded in size and nesting first); `ValidationError` if malformed."""
        raw = check_json_bounds(data, max_bytes=MAX_MANIFEST_BYTES, what="task manifest")
        try:
            return cls.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"not an Arena task manifest: {exc}") from exc

    @property
    def spec_hash(self) -> bytes:
        """The 32 bytes the contract stores as `specHash`."""
        return hashlib.sha256(self.to_bytes()).digest()


def encode_dataset(data: Dataset) -> bytes:
    """A dataset as safetensors bytes, written by hand so the same examples always give the same bytes.

    (The safetensors library orders header keys by hash, so its output is not reproducible.)
    """
    arrays = {"inputs": np.ascontiguousarray(data.inputs)}
    if data.targets is not None:
        arrays["targets"] = np.ascontiguousarray(data.targets)
    header: dict[str, object] = {
        "__metadata__": {"dataset": data.name, "task": data.task, "num_classes": str(data.num_classes)}
    }
    offset = 0
    for name, array in sorted(arrays.items()):
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[array.dtype.str.lstrip("<|")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format lets the header be padded; aligned data loads faster
    body = b"".join(
        array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes() for _, array in sorted(arrays.items())
    )
    return len(text).to_bytes(8, "little") + text + body


_SAFETENSORS_DTYPES = {"f4": "F32", "f8": "F64", "i8": "I64", "i4": "I32", "u1": "U8", "i1": "I8", "f2": "F16"}


def decode_dataset(blob: bytes) -> Dataset:
    """The inverse of `encode_dataset`; `ValidationError` for anything else."""
    try:
        header_length = int.from_bytes(blob[:8], "little")
        header = loads_json(
            blob[8 : 8 + header_length], max_bytes=MAX_MANIFEST_BYTES, max_depth=MAX_DATASET_HEADER_DEPTH, what="header"
        )
        metadata = header.get("__metadata__") or {}
        arrays = load_arrays(blob)
        task = metadata["task"]
        if task not in ("classification", "language"):
            raise ValueError(f"unknown task {task!r}")
        return Dataset(
            name=str(metadata["dataset"]),
            task=task,
            inputs=arrays["inputs"],
            targets=arrays.get("targets"),
            num_classes=int(metadata["num_classes"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, UntrustedInputError) as exc:
        raise ValidationError(f"the task's training data is not a Covey dataset file: {exc}") from exc


def publish_task(spec: TaskSpec, store: ArtifactStore) -> tuple[TaskManifest, ValidationKey]:
    """Split the data with a fresh secret key, upload the training part and the manifest; return both.

    The caller keeps the key (see `save_key`) and hands it to validators only.
    """
    key = ValidationKey.generate(spec)
    split = key.split()
    train_ref = store.put(encode_dataset(split.public_train))
    manifest = TaskManifest(
        spec=spec.model_copy(update={"split_seed": 0}),
        train_data=train_ref.digest,
        train_examples=len(split.public_train),
        validation_examples=len(split.private_validation),
        validation_commitment=key.commitment,
    )
    stored = store.put(manifest.to_bytes())
    assert stored.digest == manifest.spec_hash.hex()
    return manifest, key


def fetch_manifest(store: ArtifactStore, spec_hash: bytes) -> TaskManifest:
    """The manifest a task's `specHash` names, hash-checked by the store."""
    return TaskManifest.from_bytes(store.get(spec_hash.hex(), max_bytes=MAX_MANIFEST_BYTES))


def fetch_training_data(store: ArtifactStore, manifest: TaskManifest) -> Dataset:
    """The public training split of a task (all a trainer ever gets)."""
    return decode_dataset(store.get(manifest.train_data, max_bytes=MAX_TRAIN_DATA_BYTES))


def held_out_data(manifest: TaskManifest, key: ValidationKey) -> Dataset:
    """The validators' split after checking the key against the manifest; `ValidationError` when it does not fit."""
    if key.commitment != manifest.validation_commitment:
        raise ValidationError("this validation key does not match the task's commitment: ask the creator for it")
    if key.dataset != manifest.spec.dataset:
        raise ValidationError(f"the validation key is for {key.dataset}, the task uses {manifest.spec.dataset}")
    split = key.split()
    if sha256_hex(encode_dataset(split.public_train)) != manifest.train_data:
        raise ValidationError("the task's public training data is not the complement of the held-out split")
    return split.private_validation


def keys_dir(home: Path) -> Path:
    """Where validation keys live: `COVEY_HOME/arena/keys` (owner-only)."""
    folder = home / "arena" / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def key_path(home: Path, spec_hash: bytes) -> Path:
    return keys_dir(home) / f"{spec_hash.hex()}.json"


def save_key(home: Path, spec_hash: bytes, key: ValidationKey) -> Path:
    """Write a validation key (mode 0600, atomically) and return its path."""
    path = key_path(home, spec_hash)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_bytes())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_key(home: Path, spec_hash: bytes) -> ValidationKey:
    """The validation key for a task, from `COVEY_HOME/arena/keys`; `StorageError` when it was never delivered."""
    path = key_path(home, spec_hash)
    if not path.is_file():
        raise StorageError(
            f"no validation key for spec {spec_hash.hex()[:12]}… in {path.parent}: "
            "get the key file from the task creator and pass it with --key"
        )
    return ValidationKey.from_bytes(path.read_bytes())
