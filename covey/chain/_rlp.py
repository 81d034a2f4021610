"""The bits of RLP covey writes and reads by hand: encoding ints, bytes and lists, and walking raw items.

pyrlp infers a sedes per item, which is ~10x slower than these; both the signer (`signing`) and the
embedded chain's hot paths (account records, block hashes, sender recovery) use them.
"""

from __future__ import annotations

from typing import Any


def rlp_length_prefix(length: int, offset: int) -> bytes:
    """The RLP prefix of a string (`offset` 0x80) or list (0xC0) payload of `length` bytes."""
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def rlp_encode(item: int | bytes | list[Any]) -> bytes:
    """RLP of non-negative ints, bytes and lists of them (pyrlp infers sedes per item, 10x slower)."""
    if isinstance(item, list):
        payload = b"".join(rlp_encode(element) for element in item)
        return rlp_length_prefix(len(payload), 0xC0) + payload
    if isinstance(item, int):
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if len(item) == 1 and item[0] < 0x80:
        return item
    return rlp_length_prefix(len(item), 0x80) + item


def rlp_item_end(data: bytes, position: int) -> int:
    """Where the RLP item starting at `position` ends."""
    prefix = data[position]
    if prefix < 0x80:
        return position + 1
    if prefix <= 0xB7:
        return position + 1 + prefix - 0x80
    if prefix <= 0xBF:
        size_bytes = prefix - 0xB7
        return position + 1 + size_bytes + int.from_bytes(data[position + 1 : position + 1 + size_bytes], "big")
    if prefix <= 0xF7:
        return position + 1 + prefix - 0xC0
    size_bytes = prefix - 0xF7
    return position + 1 + size_bytes + int.from_bytes(data[position + 1 : position + 1 + size_bytes], "big")


def rlp_list_payload_start(data: bytes, position: int) -> int:
    """Where the payload of the RLP list starting at `position` begins."""
    prefix = data[position]
    return position + 1 if prefix <= 0xF7 else position + 1 + prefix - 0xF7
