"""On-disk checkpoints of the embedded chain: the state snapshot and the block history file.

- `snapshot.bin`: the state trie nodes and code reachable from the state root, the chain clock
  and where the journal and history files stand. Written whole to a temp file, fsynced and
  renamed, so a crash leaves either the old snapshot or the new one.
- `history.bin`: mined blocks with their transactions and receipts, appended at each snapshot
  (framed like the journal). Bytes past the size a snapshot recorded are ignored and cut off.

The formats are plain length-prefixed binary and RLP; nothing is pickled.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3

from covey.chain._embedded.engine import Block, LogEntry, TxRecord
from covey.chain._embedded.journal import JournalPosition, frame, fsync_directory, read_frames
from covey.errors import ChainError

SNAPSHOT_FILE = "snapshot.bin"
HISTORY_FILE = "history.bin"
_MAGIC = b"COVEYSNP"
_VERSION = 1
_META = struct.Struct("<8sI32sQQQQq?Q")
_LENGTH = struct.Struct("<I")
_COUNT = struct.Struct("<Q")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Everything besides the state nodes that a restart needs to resume."""

    state_root: bytes
    journal: JournalPosition
    history_size: int
    block_count: int
    time_offset_s: int
    next_timestamp: int | None


def reachable_state_nodes(read: Callable[[bytes], bytes], state_root: bytes) -> dict[bytes, bytes]:
    """The account trie, storage tries and code reachable from `state_root`.

    Persisting py-evm state never deletes old trie nodes, so copying only what the root reaches
    is also the garbage collection of the state database.
    """
    nodes: dict[bytes, bytes] = {}

    def visit_account(encoded_account: bytes) -> None:
        _nonce, _balance, storage_root, code_hash = rlp.decode(encoded_account)
        _walk_trie(read, storage_root, nodes, on_leaf=None)
        if code_hash != EMPTY_SHA3 and code_hash not in nodes:
            nodes[code_hash] = read(code_hash)

    _walk_trie(read, state_root, nodes, on_leaf=visit_account)
    return nodes


def _walk_trie(
    read: Callable[[bytes], bytes],
    root: bytes,
    nodes: dict[bytes, bytes],
    on_leaf: Callable[[bytes], None] | None,
) -> None:
    pending: list[Any] = [root]
    while pending:
        reference = pending.pop()
        if isinstance(reference, bytes):
            if reference in (b"", BLANK_ROOT_HASH) or reference in nodes:
                continue
            encoded = read(reference)
            nodes[reference] = encoded
            node = rlp.decode(encoded)
        else:
            node = reference  # a node under 32 bytes is embedded in its parent
        if len(node) == 17:
            pending.extend(child for child in node[:16] if child != b"")
            if node[16] and on_leaf is not None:
                on_leaf(node[16])
        elif len(node) == 2:
            is_leaf = node[0][0] >> 4 in (2, 3)  # hex-prefix flag of the path
            if not is_leaf:
                pending.append(node[1])
            elif on_leaf is not None:
                on_leaf(node[1])


def write_snapshot(data_dir: Path, meta: SnapshotMeta, nodes: Mapping[bytes, bytes]) -> None:
    """Atomically replace `data_dir/snapshot.bin` with `meta` and `nodes`."""
    parts: list[bytes] = [
        _META.pack(
            _MAGIC,
            _VERSION,
            meta.state_root,
            meta.journal.segment,
            meta.journal.offset,
            meta.history_size,
            meta.block_count,
            meta.time_offset_s,
            meta.next_timestamp is not None,
            meta.next_timestamp or 0,
        ),
        _COUNT.pack(len(nodes)),
    ]
    pack_length = _LENGTH.pack
    for key, value in nodes.items():
        parts += (pack_length(len(key)), key, pack_length(len(value)), value)
    body = b"".join(parts)
    target = data_dir / SNAPSHOT_FILE
    temporary = data_dir / (SNAPSHOT_FILE + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(body)
        handle.write(_CRC.pack(zlib.crc32(body)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fsync_directory(data_dir)


def read_snapshot(data_dir: Path) -> tuple[SnapshotMeta, dict[bytes, bytes]] | None:
    """The snapshot in `data_dir`, or None if there is none; raises `ChainError` if damaged."""
    path = data_dir / SNAPSHOT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _META.size + _COUNT.size + _CRC.size:
        raise ChainError(f"the chain snapshot {path} is truncated")
    body, (checksum,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != checksum:
        raise ChainError(f"the chain snapshot {path} fails its checksum: the file is damaged")
    magic, version, root, segment, offset, history_size, block_count, time_offset, pinned, next_ts = _META.unpack_from(
        body
    )
    if magic != _MAGIC or version != _VERSION:
        raise ChainError(f"{path} is not a chain snapshot this version of Covey can read")
    meta = SnapshotMeta(
        state_root=root,
        journal=JournalPosition(segment, offset),
        history_size=history_size,
        block_count=block_count,
        time_offset_s=time_offset,
        next_timestamp=next_ts if pinned else None,
    )
    position = _META.size
    (count,) = _COUNT.unpack_from(body, position)
    position += _COUNT.size
    nodes: dict[bytes, bytes] = {}
    unpack_length = _LENGTH.unpack_from
    for _ in range(count):
        (key_length,) = unpack_length(body, position)
        position += 4
        key = body[position : position + key_length]
        position += key_length
        (value_length,) = unpack_length(body, position)
        position += 4
        nodes[key] = body[position : position + value_length]
        position += value_length
    return meta, nodes


# -- history ---------------------------------------------------------------------------------


def _encode_block(block: Block, records: Sequence[TxRecord]) -> bytes:
    transactions = [
        [
            record.hash,
            record.raw,
            record.sender,
            record.to or b"",
            record.type_id,
            record.nonce,
            record.status,
            record.gas_used,
            record.effective_gas_price,
            record.contract_address or b"",
            [[log.address, list(log.topics), log.data] for log in record.logs],
        ]
        for record in records
    ]
    return rlp.encode(
        [
            block.number,
            block.hash,
            block.parent_hash,
            block.timestamp,
            block.prevrandao,
            block.gas_used,
            transactions,
        ]
    )


def _to_int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _decode_block(payload: bytes) -> tuple[Block, list[TxRecord]]:
    number, block_id, parent_hash, timestamp, randao, gas_used, transactions = rlp.decode(payload)
    records = []
    block_number = _to_int(number)
    for tx_hash, raw, sender, to, type_id, nonce, status, tx_gas, price, contract, logs in transactions:
        records.append(
            TxRecord(
                hash=tx_hash,
                raw=raw,
                block_number=block_number,
                sender=sender,
                to=to or None,
                type_id=_to_int(type_id),
                nonce=_to_int(nonce),
                status=_to_int(status),
                gas_used=_to_int(tx_gas),
                effective_gas_price=_to_int(price),
                contract_address=contract or None,
                logs=tuple(LogEntry(address, tuple(topics), data) for address, topics, data in logs),
            )
        )
    block = Block(
        number=block_number,
        hash=block_id,
        parent_hash=parent_hash,
        timestamp=_to_int(timestamp),
        prevrandao=randao,
        gas_used=_to_int(gas_used),
        tx_hashes=tuple(record.hash for record in records),
    )
    return block, records


def append_history(data_dir: Path, size: int, blocks: Iterable[tuple[Block, Sequence[TxRecord]]]) -> int:
    """Append `blocks` to the history file (cut back to `size` first); returns the new size."""
    path = data_dir / HISTORY_FILE
    with path.open("ab") as handle:
        handle.truncate(size)
        handle.write(b"".join(frame(_encode_block(block, records)) for block, records in blocks))
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def load_history(data_dir: Path, size: int, block_count: int) -> list[tuple[Block, list[TxRecord]]]:
    """The first `block_count` blocks from the history file's first `size` bytes."""
    path = data_dir / HISTORY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    if len(data) < size:
        raise ChainError(f"the chain history {path} is shorter than the snapshot says ({size} bytes)")
    payloads, end = read_frames(data[:size])
    if end != size or len(payloads) != block_count:
        raise ChainError(f"the chain history {path} is damaged at byte {end}")
    return [_decode_block(payload) for payload in payloads]
