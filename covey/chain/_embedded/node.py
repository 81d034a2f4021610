"""One embedded chain on disk: the data-directory lock, the engine, its journal and snapshots.

Writes go journal-first: a transaction is checked, appended to the journal, executed, and
confirmed only once its journal record is committed (see `Durability`). Every `snapshot_every`
journal entries (and on `close`) the state, the block history and the journal position are
saved, so opening replays only the journal written since. `lock` serialises all access to the
engine; calls hold it only to capture a `view.StateView` and run outside it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB

from covey.chain._embedded.engine import Block, Engine
from covey.chain._embedded.journal import (
    Journal,
    JournalEntry,
    JournalPosition,
    MineEntry,
    SetBalanceEntry,
    TimeEntry,
    TxEntry,
    list_segments,
    replay_entries,
)
from covey.chain._embedded.snapshot import (
    SnapshotMeta,
    append_history,
    load_history,
    reachable_state_nodes,
    read_snapshot,
    write_snapshot,
)
from covey.chain._keccak import use_fast_keccak
from covey.errors import ChainBusyError, ChainError

LOCK_FILE = "LOCK"
JOURNAL_DIR = "journal"
SNAPSHOT_EVERY = 2000
_MAX_UINT256 = 2**256 - 1

# When a journaled write counts as committed, so that it may be confirmed:
# - "fsync": once fdatasync has covered its record; survives a power cut (costs one disk flush of
#   latency per confirmation, 0.3-8 ms depending on the disk and its load).
# - "write": once its record is written to the OS; survives a SIGKILL or crash of the process but
#   not of the machine. A flusher thread fsyncs right behind, so a power cut loses at most the
#   writes of the last flush (a few ms); snapshots are always fsynced.
# - "none": never fsynced outside snapshots; for throwaway test chains.
Durability = Literal["fsync", "write", "none"]
# "write" is the default: the design asks that confirmed transactions survive SIGKILL, which it
# meets, and it roughly doubles single-client throughput on disks with slow flushes.
DEFAULT_DURABILITY: Durability = "write"


class EmbeddedNode:
    """A persistent in-process chain; open it with `open_node` and `close` it when done."""

    def __init__(
        self,
        data_dir: Path,
        engine: Engine,
        journal: Journal,
        lock_fd: int,
        *,
        history_size: int,
        history_blocks: int,
        snapshot_every: int,
    ) -> None:
        self.data_dir = data_dir
        self.engine = engine
        # Re-entrant so that a dispatcher holding it can call the write methods below.
        self.lock = threading.RLock()
        self._journal = journal
        self._lock_fd = lock_fd
        self._history_size = history_size
        self._history_blocks = history_blocks
        self._snapshot_every = snapshot_every
        self._entries_since_snapshot = 0
        self.closed = False

    # -- writes -----------------------------------------------------------------------------

    def send_raw_transaction(self, raw: bytes, *, wait: bool = True, allow_unprotected: bool = False) -> bytes:
        """Check, journal and mine a signed transaction; returns its hash once committed.

        With `wait=False` it returns as soon as the transaction is mined; the caller must then
        `wait_committed` before showing anyone its effects (the JSON-RPC layer does, so that the
        disk flush overlaps the trip back to the client). Raises `TransactionRejected` (nothing
        journaled) if the transaction cannot be mined, or if it is a legacy transaction without a chain
        id and `allow_unprotected` is off.
        """
        with self.lock:
            self._check_open()
            engine = self.engine
            checked = engine.check_transaction(raw, allow_unprotected=allow_unprotected)
            timestamp = engine.peek_timestamp()
            before = self._journal.position
            ticket = self._journal.append(TxEntry(engine.head.number + 1, timestamp, raw))
            try:
                record = engine.execute(checked, timestamp)
            except BaseException:
                # Keep journal and state in step: a write the engine refused must not replay.
                self._journal.truncate(before)
                raise
            self._count_entry()
        if wait:
            self._journal.sync_through(ticket)
        return record.hash

    @property
    def written_ticket(self) -> int:
        """The journal ticket of the latest write: pass it to `wait_committed` (call under `lock`)."""
        return self._journal.written

    def wait_committed(self, ticket: int) -> None:
        """Return once journal write `ticket` and every one before it is committed."""
        self._journal.sync_through(ticket)

    def mine(self, timestamp: int | None = None) -> Block:
        """Mine an empty block (at `timestamp`, else the clock's next timestamp)."""
        with self.lock:
            self._check_open()
            engine = self.engine
            stamp = engine.peek_timestamp() if timestamp is None else timestamp
            if stamp < engine.head.timestamp:
                raise ChainError(f"timestamp {stamp} is before the latest block's {engine.head.timestamp}")
            ticket = self._journal.append(MineEntry(engine.head.number + 1, stamp))
            block = engine.mine_empty(stamp)
            self._count_entry()
        self._journal.sync_through(ticket)
        return block

    def increase_time(self, seconds: int) -> int:
        """Move the chain clock forward; returns the total offset in seconds."""
        with self.lock:
            self._check_open()
            offset = self.engine.time_offset_s
            if seconds < 0:
                raise ChainError(f"cannot move time backwards (asked for {seconds} s)")
            ticket = self._journal.append(TimeEntry(offset + seconds, self.engine.next_timestamp))
            total = self.engine.increase_time(seconds)
            self._count_entry()
        self._journal.sync_through(ticket)
        return total

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """Pin the next block's timestamp (not before the latest block's)."""
        with self.lock:
            self._check_open()
            head = self.engine.head
            if timestamp < head.timestamp:
                raise ChainError(f"timestamp {timestamp} is before the latest block's timestamp {head.timestamp}")
            ticket = self._journal.append(TimeEntry(self.engine.time_offset_s, timestamp))
            self.engine.set_next_timestamp(timestamp)
            self._count_entry()
        self._journal.sync_through(ticket)

    def set_balance(self, address: bytes, balance_wei: int) -> None:
        """Dev control: overwrite an account's balance."""
        if len(address) != 20 or not 0 <= balance_wei <= _MAX_UINT256:
            raise ChainError("set_balance needs a 20-byte address and a balance between 0 and 2**256-1")
        with self.lock:
            self._check_open()
            ticket = self._journal.append(SetBalanceEntry(address, balance_wei))
            self.engine.set_balance(address, balance_wei)
            self._count_entry()
        self._journal.sync_through(ticket)

    # -- checkpoints and lifecycle ----------------------------------------------------------

    def checkpoint(self) -> None:
        """Save state, history and journal position now, so a restart replays nothing."""
        with self.lock:
            self._check_open()
            engine = self.engine
            root = engine.persist_state()
            nodes = reachable_state_nodes(engine.read_state_node, root)
            engine.rebase(nodes)
            fresh_blocks = [(block, engine.block_records(block)) for block in engine.blocks[self._history_blocks :]]
            self._history_size = append_history(self.data_dir, self._history_size, fresh_blocks)
            self._history_blocks = len(engine.blocks)
            position = self._journal.rotate()
            meta = SnapshotMeta(
                state_root=root,
                journal=position,
                history_size=self._history_size,
                block_count=self._history_blocks,
                time_offset_s=engine.time_offset_s,
                next_timestamp=engine.next_timestamp,
            )
            write_snapshot(self.data_dir, meta, nodes)
            self._journal.drop_segments_before(position.segment)
            self._entries_since_snapshot = 0

    def close(self, *, wait_s: float | None = None) -> bool:
        """Checkpoint, release the data directory and stop accepting requests; returns True once closed.

        With `wait_s`, gives up after that long if a write still holds the lock (a transaction can run
        for seconds in py-evm): the node then refuses new requests and returns False, and the caller
        should end the process, which releases the directory. Nothing is lost: the running write was
        journaled before it started, and the next open replays it.
        """
        if not self.lock.acquire(timeout=-1 if wait_s is None else wait_s):
            self.closed = True
            return False
        try:
            if self.closed:
                return True
            try:
                self.checkpoint()
            finally:
                self.closed = True
                self._journal.close()
                os.close(self._lock_fd)
            return True
        finally:
            self.lock.release()

    def __enter__(self) -> EmbeddedNode:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ChainError(f"the embedded chain in {self.data_dir} is closed")

    def _count_entry(self) -> None:
        self._entries_since_snapshot += 1
        if self._entries_since_snapshot >= self._snapshot_every:
            self.checkpoint()


def open_node(
    data_dir: Path, *, snapshot_every: int = SNAPSHOT_EVERY, durability: Durability = DEFAULT_DURABILITY
) -> EmbeddedNode:
    """Open (or create) the embedded chain kept in `data_dir`.

    Takes the directory's exclusive lock (`ChainBusyError` if another opener holds it), loads
    the latest snapshot and replays the journal written after it. `durability` says when a write
    is committed (see `Durability`).
    """
    if durability not in ("fsync", "write", "none"):
        raise ChainError(f"unknown durability {durability!r}: expected 'fsync', 'write' or 'none'")
    use_fast_keccak()  # py-evm hashes on every storage access: replaying the journal starts right away
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _acquire_lock(data_dir)
    try:
        return _load_or_create(data_dir, lock_fd, snapshot_every=snapshot_every, durability=durability)
    except BaseException:
        os.close(lock_fd)  # release the directory for the next opener, then let the error out
        raise


def _load_or_create(data_dir: Path, lock_fd: int, *, snapshot_every: int, durability: Durability) -> EmbeddedNode:
    journal_dir = data_dir / JOURNAL_DIR
    fsync, wait_for_fsync = durability != "none", durability == "fsync"
    loaded = read_snapshot(data_dir)
    if loaded is None:
        if list_segments(journal_dir):
            raise ChainError(f"{journal_dir} holds a journal but {data_dir} has no snapshot to replay it on")
        node = EmbeddedNode(
            data_dir,
            Engine.genesis(),
            Journal(journal_dir, JournalPosition(0, 0), fsync=fsync, wait_for_fsync=wait_for_fsync),
            lock_fd,
            history_size=0,
            history_blocks=0,
            snapshot_every=snapshot_every,
        )
        node.checkpoint()  # the genesis must be on disk before any journal entry refers to it
        return node
    meta, nodes = loaded
    engine = Engine(
        AtomicDB(MemoryDB(nodes)),
        meta.state_root,
        load_history(data_dir, meta.history_size, meta.block_count),
        time_offset_s=meta.time_offset_s,
        next_timestamp=meta.next_timestamp,
    )
    entries, end = replay_entries(journal_dir, meta.journal)
    _replay(engine, entries)
    node = EmbeddedNode(
        data_dir,
        engine,
        Journal(journal_dir, end, fsync=fsync, wait_for_fsync=wait_for_fsync),
        lock_fd,
        history_size=meta.history_size,
        history_blocks=meta.block_count,
        snapshot_every=snapshot_every,
    )
    node._entries_since_snapshot = len(entries)
    if len(entries) >= snapshot_every:
        node.checkpoint()
    return node


def _replay(engine: Engine, entries: list[JournalEntry]) -> None:
    """Re-apply journal entries; each block gets the number and timestamp it had the first time."""
    for index, entry in enumerate(entries):
        if isinstance(entry, TxEntry | MineEntry) and entry.number != engine.head.number + 1:
            raise ChainError(
                f"journal entry {index} is for block {entry.number} but the chain is at block "
                f"{engine.head.number}: the journal does not belong to this snapshot"
            )
        match entry:
            case TxEntry(_, timestamp, raw):
                try:
                    checked = engine.check_transaction(raw)
                except ChainError as exc:
                    raise ChainError(f"journal entry {index} no longer applies: {exc}") from exc
                engine.execute(checked, timestamp)
            case MineEntry(_, timestamp):
                engine.mine_empty(timestamp)
            case SetBalanceEntry(address, balance_wei):
                engine.set_balance(address, balance_wei)
            case TimeEntry(offset_s, next_timestamp):
                engine.time_offset_s = offset_s
                engine.next_timestamp = next_timestamp


def _acquire_lock(data_dir: Path) -> int:
    """Take `data_dir/LOCK` exclusively without waiting; the lock dies with the process."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = "this process" if holder == str(os.getpid()) else f"process {holder or '(unknown)'}"
        raise ChainBusyError(
            f"the chain in {data_dir} is already open in {who}; close it there, or reach it over "
            "JSON-RPC (`covey chain serve`)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
