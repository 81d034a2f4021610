"""The canonical bytes and hash of an update: fixed layout, exact round trip, one hash for every voter."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from covey.alliance import AggregationError, aggregate, decode_update, encode_update, update_hash


def test_the_layout_is_magic_itemsize_ndim_shape_then_little_endian_data() -> None:
    encoded = encode_update(np.array([1.0, -2.0]))
    assert encoded == b"CVU1" + bytes([8, 1]) + struct.pack("<Q", 2) + struct.pack("<2d", 1.0, -2.0)
    encoded32 = encode_update(np.array([0.1, 3.0]), dtype="float32")
    assert encoded32 == b"CVU1" + bytes([4, 1]) + struct.pack("<Q", 2) + struct.pack("<2f", 0.1, 3.0)


def test_update_hash_is_the_sha256_of_the_encoding_and_stays_fixed() -> None:
    vector = np.array([1.0, -2.0])
    assert update_hash(vector) == hashlib.sha256(encode_update(vector)).digest()
    assert len(update_hash(vector)) == 32
    # Pinned so a change of layout (which would split voters on different versions) fails loudly.
    assert update_hash(vector).hex() == "e65e07753f49f2879235029ccf2c68d59a7260cc3ba21b20b46b3a62327a1bd7"


def test_round_trip_is_exact() -> None:
    vector = np.random.default_rng(0).normal(size=257)
    decoded = decode_update(encode_update(vector))
    assert decoded.dtype == np.float64
    assert decoded.tobytes() == vector.tobytes()
    decoded32 = decode_update(encode_update(vector, dtype="float32"))
    assert decoded32.dtype == np.float32
    np.testing.assert_array_equal(decoded32, vector.astype(np.float32))
    decoded32[0] = 5.0  # writable: a caller may update it in place


def test_equal_values_hash_alike_and_different_forms_do_not() -> None:
    assert update_hash(np.array([-0.0, 1.0])) == update_hash(np.array([0.0, 1.0]))
    assert update_hash(np.array([1, 2], dtype=np.int64)) == update_hash(np.array([1.0, 2.0]))
    assert update_hash(np.array([1.0, 2.0])) != update_hash(np.array([1.0, 2.0]), dtype="float32")
    assert update_hash(np.array([1.0, 2.0])) != update_hash(np.array([[1.0, 2.0]]))
    assert update_hash(np.array([1.0, 2.0])) != update_hash(np.array([1.0, 2.0 + 2**-50]))


def test_a_voter_recomputes_the_proposers_candidate_hash() -> None:
    rng = np.random.default_rng(5)
    committed = [encode_update(rng.normal(size=64).astype(np.float32), dtype="float32") for _ in range(7)]
    proposer_hash = update_hash(aggregate("covey_default", [decode_update(blob) for blob in committed]))
    # The voter downloads the same committed bytes and runs the same rule on its own.
    voter_updates = [decode_update(bytes(bytearray(blob))) for blob in committed]
    assert update_hash(aggregate("covey_default", voter_updates)) == proposer_hash


def test_non_finite_values_cannot_be_encoded() -> None:
    with pytest.raises(AggregationError, match="1 NaN or infinite values"):
        encode_update(np.array([1.0, np.nan]))
    with pytest.raises(AggregationError, match="after conversion to float32"):
        encode_update(np.array([1e300]), dtype="float32")
    with pytest.raises(AggregationError, match="dtype must be 'float32' or 'float64'"):
        encode_update(np.array([1.0]), dtype="float16")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"CVU", "shorter than the 6-byte header"),
        (b"XXXX" + bytes([8, 1]) + struct.pack("<Q", 1) + struct.pack("<d", 1.0), "magic is b'XXXX'"),
        (b"CVU1" + bytes([2, 1]) + struct.pack("<Q", 1) + b"\x00\x00", "itemsize is 2"),
        (b"CVU1" + bytes([8, 2]) + struct.pack("<Q", 1), "cannot hold a header with 2 dimensions"),
        (b"CVU1" + bytes([8, 1]) + struct.pack("<Q", 2) + struct.pack("<d", 1.0), r"needs 30 bytes, got 22"),
        (b"CVU1" + bytes([8, 1]) + struct.pack("<Q", 1) + struct.pack("<d", 1.0) + b"\x00", "needs 22 bytes, got 23"),
        (b"CVU1" + bytes([8, 1]) + struct.pack("<Q", 1) + struct.pack("<d", float("inf")), "NaN or infinite"),
    ],
)
def test_malformed_bytes_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        decode_update(data)
