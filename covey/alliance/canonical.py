"""The canonical bytes of an update or aggregate, and its hash: what goes in the store and on chain.

Layout (all little-endian):

    b"CVU1"                    magic and format version
    itemsize      uint8        4 (float32) or 8 (float64)
    ndim          uint8        number of dimensions (1 for an update)
    shape         ndim x uint64
    data          prod(shape) x float32 or float64, C order

`update_hash` is the sha256 of those bytes, 32 bytes, the form a contract stores in a `bytes32`.
sha256 rather than keccak because the artifact store addresses content by sha256: an update
uploaded as its canonical bytes has a store digest equal to its `update_hash`, so one hash names
it in the store and on chain.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Literal

import numpy as np
import numpy.typing as npt

from covey.alliance.errors import AggregationError

MAGIC = b"CVU1"
FloatDtype = Literal["float32", "float64"]
_ITEMSIZE_TO_DTYPE: dict[int, str] = {4: "<f4", 8: "<f8"}
_DTYPE_TO_ITEMSIZE: dict[str, int] = {"float32": 4, "float64": 8}
_HEADER = struct.Struct("<4sBB")
_DIM = struct.Struct("<Q")


def encode_update(vector: npt.ArrayLike, dtype: FloatDtype = "float64") -> bytes:
    """The canonical bytes of `vector` stored as `dtype` (float64 by default: no rounding of the aggregate).

    float32 storage rounds each value to nearest (ties to even), the same on every machine. -0.0 is
    written as +0.0, so two sums that differ only in the sign of a zero still hash alike. Raises
    `AggregationError` for a non-real or non-finite array or an unknown dtype.
    """
    if dtype not in _DTYPE_TO_ITEMSIZE:
        raise AggregationError(f"canonical: dtype must be 'float32' or 'float64', got {dtype!r}")
    array = np.asarray(vector)
    if array.dtype.kind not in "fiu":
        raise AggregationError(f"canonical: cannot encode dtype {array.dtype}; updates are real numbers")
    if array.ndim > 255:
        raise AggregationError(f"canonical: at most 255 dimensions, got {array.ndim}")
    little_endian = _ITEMSIZE_TO_DTYPE[_DTYPE_TO_ITEMSIZE[dtype]]
    with np.errstate(over="ignore"):  # a float32 overflow becomes inf, which the check below reports
        stored = np.ascontiguousarray(array, dtype=little_endian)
    bad = ~np.isfinite(stored)
    if bad.any():
        raise AggregationError(
            f"canonical: {int(bad.sum())} NaN or infinite values (after conversion to {dtype}); cannot encode"
        )
    # IEEE: -0.0 + 0.0 == +0.0. Arithmetic yields native byte order, so convert back before writing.
    stored = (stored + stored.dtype.type(0.0)).astype(little_endian, copy=False)
    header = _HEADER.pack(MAGIC, _DTYPE_TO_ITEMSIZE[dtype], array.ndim)
    return header + b"".join(_DIM.pack(size) for size in array.shape) + stored.tobytes(order="C")


def decode_update(data: bytes) -> npt.NDArray[np.floating]:
    """The array that `encode_update` wrote into `data`, as a writable float32 or float64 array.

    Raises `AggregationError` when the magic, dtype code, shape or length do not match, or a value
    is NaN or infinite.
    """
    if len(data) < _HEADER.size:
        raise AggregationError(f"canonical: {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, itemsize, ndim = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AggregationError(f"canonical: magic is {magic!r}, expected {MAGIC!r}")
    if itemsize not in _ITEMSIZE_TO_DTYPE:
        raise AggregationError(f"canonical: itemsize is {itemsize}, expected 4 (float32) or 8 (float64)")
    data_start = _HEADER.size + ndim * _DIM.size
    if len(data) < data_start:
        raise AggregationError(f"canonical: {len(data)} bytes cannot hold a header with {ndim} dimensions")
    shape = tuple(_DIM.unpack_from(data, _HEADER.size + axis * _DIM.size)[0] for axis in range(ndim))
    expected = data_start + math.prod(shape) * itemsize
    if len(data) != expected:
        raise AggregationError(f"canonical: shape {shape} needs {expected} bytes, got {len(data)}")
    array = np.frombuffer(data, dtype=_ITEMSIZE_TO_DTYPE[itemsize], offset=data_start).reshape(shape)
    if not np.isfinite(array).all():
        raise AggregationError("canonical: the data holds NaN or infinite values")
    return array.astype(np.float64 if itemsize == 8 else np.float32, copy=True)


def update_hash(vector: npt.ArrayLike, dtype: FloatDtype = "float64") -> bytes:
    """The 32-byte sha256 of `encode_update(vector, dtype)`: the candidate hash every voter recomputes."""
    return hashlib.sha256(encode_update(vector, dtype)).digest()
