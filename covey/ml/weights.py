"""Model weights as safetensors bytes (never pickle), checked against the model, and as flat vectors.

A weights file is untrusted input: it is size-checked, its header (JSON) bounded in size and nesting
depth and parsed by hand before the safetensors parser sees it, and every tensor's name, shape, dtype and
finiteness checked.
Nothing in it can run code. A file made by `save_weights` also names its model family and
config in the safetensors metadata (`covey.family`, `covey.config`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from covey.bounds import UntrustedInputError, loads_json
from covey.errors import ModelError
from covey.ml.models import MODEL_FAMILIES, config_dict

MAX_HEADER_BYTES = 16 << 20  # far above any real header; stops a forged length from allocating gigabytes
# A real header nests 3 deep (tensor -> shape list); the metadata is a flat map of strings.
MAX_HEADER_DEPTH = 8
FAMILY_KEY = "covey.family"
CONFIG_KEY = "covey.config"


def save_weights(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's `state_dict` as safetensors bytes, with its family and config in the metadata."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    header: dict[str, str] = dict(metadata or {})
    family = getattr(model, "family", None)
    if family in MODEL_FAMILIES:
        header[FAMILY_KEY] = str(family)
        header[CONFIG_KEY] = json.dumps(config_dict(model), sort_keys=True)
    return save_safetensors(tensors, metadata=header)


def read_header(data: bytes, max_bytes: int | None = None) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checks that give a clear reason for junk.

    Raises `ModelError` for an oversized file, a pickle or zip (`torch.save`) file, or a
    header whose length or JSON is malformed.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ModelError(f"weights file has {len(data)} bytes, more than the limit of {max_bytes}")
    if data[:1] == b"\x80":
        raise ModelError("weights file is a pickle, not safetensors; pickles can run code and are refused")
    if data[:4] == b"PK\x03\x04":
        raise ModelError("weights file is a zip archive (torch.save output), not safetensors; it is refused")
    if len(data) < 8:
        raise ModelError(f"weights file has only {len(data)} bytes; a safetensors file starts with an 8-byte length")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > min(len(data) - 8, MAX_HEADER_BYTES):
        raise ModelError(
            f"weights file is not valid safetensors: its header claims {header_length} bytes "
            f"but the file has {len(data) - 8} after the length"
        )
    try:
        header = loads_json(
            data[8 : 8 + header_length], max_bytes=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH, what="its header"
        )
    except UntrustedInputError as exc:
        raise ModelError(f"weights file is not valid safetensors: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelError("weights file is not valid safetensors: its header is not a JSON object")
    return header


def read_architecture(data: bytes, max_bytes: int | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """The model family and config a weights file names in its metadata (`None`s when absent)."""
    metadata = read_header(data, max_bytes).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ModelError("weights file metadata is not a JSON object")
    family = metadata.get(FAMILY_KEY)
    raw_config = metadata.get(CONFIG_KEY)
    config: dict[str, Any] | None = None
    if raw_config is not None:
        if not isinstance(raw_config, str):
            raise ModelError(f"weights file metadata {CONFIG_KEY} is not a string")
        try:
            config = loads_json(raw_config, max_bytes=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH, what=CONFIG_KEY)
        except UntrustedInputError as exc:
            raise ModelError(f"weights file metadata {exc}") from exc
        if not isinstance(config, dict):
            raise ModelError(f"weights file metadata {CONFIG_KEY} is not a JSON object")
    if family is not None and not isinstance(family, str):
        raise ModelError(f"weights file metadata {FAMILY_KEY} is not a string")
    return family, config


def load_weights(model: nn.Module, data: bytes, max_bytes: int | None = None) -> nn.Module:
    """Load safetensors `data` into `model` in place and return it.

    Raises `ModelError` (and leaves the model unchanged) when the file is oversized,
    malformed, names other tensors, has a wrong shape or dtype, or holds NaN or inf.
    """
    read_header(data, max_bytes)
    try:
        tensors = load_safetensors(data)
    # The parser is native code fed untrusted bytes; whatever it rejects, the file is at fault.
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise ModelError(f"weights file is not valid safetensors: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"weights do not fit a {type(model).__name__}: missing {_few(missing)}, unexpected {_few(unexpected)}"
        )
    for name, reference in expected.items():
        tensor = tensors[name]
        if tensor.dtype != reference.dtype:
            raise ModelError(f"weights tensor {name} has dtype {tensor.dtype}, expected {reference.dtype}")
        if tensor.shape != reference.shape:
            raise ModelError(
                f"weights tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(reference.shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"weights tensor {name} contains NaN or infinite values")
    model.load_state_dict(tensors, strict=True)
    return model


def flatten(model: nn.Module) -> np.ndarray:
    """All floating-point `state_dict` entries, in order, as one float32 vector (a federated update)."""
    pieces = [
        tensor.detach().cpu().reshape(-1).to(torch.float32)
        for tensor in model.state_dict().values()
        if tensor.is_floating_point()
    ]
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(pieces).numpy()


def unflatten(model: nn.Module, vector: np.ndarray) -> nn.Module:
    """Write a vector made by `flatten` back into the model in place and return it."""
    values = np.asarray(vector)
    entries = [tensor for tensor in model.state_dict().values() if tensor.is_floating_point()]
    expected = sum(tensor.numel() for tensor in entries)
    if values.dtype.kind not in "fiu" or values.ndim != 1 or values.shape[0] != expected:
        raise ModelError(
            f"a flat vector for {type(model).__name__} has {expected} numbers, "
            f"got {values.dtype} of shape {values.shape}"
        )
    source = torch.tensor(values, dtype=torch.float32)
    offset = 0
    with torch.no_grad():
        # state_dict tensors share storage with the parameters, so copying into them updates the model.
        for tensor in entries:
            count = tensor.numel()
            tensor.copy_(source[offset : offset + count].view_as(tensor).to(tensor.dtype))
            offset += count
    return model


def _few(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
