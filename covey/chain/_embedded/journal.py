"""The append-only, fsynced journal of every accepted chain write, and its record framing.

Each entry is framed as `[u32 payload length][u32 crc32][payload]`, so a record torn by a crash
mid-write is detected and dropped on open. The journal is split into numbered segments
(`journal/00000000000000000007.log`): a snapshot starts a new segment and records its
position, and segments older than the snapshot's are deleted.

Durability is group commit: `append` only writes (under the engine lock); `sync_through` waits
(outside the lock) until an fsync covers the record, and if no fsync is under way the waiting
thread runs it itself, so one fsync covers every record written before it started and a lone
writer pays no thread hand-offs. A background thread fsyncs whatever nobody waits for every
`FLUSH_INTERVAL_S`. With `wait_for_fsync=False` a record counts as committed once `write` has
handed it to the OS (it survives a SIGKILL of the process, not a power cut) and the background
thread makes it durable within `FLUSH_INTERVAL_S`.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from covey.errors import ChainError

_FRAME_HEADER = struct.Struct("<II")
# A record can hold a transaction of up to the block gas limit in calldata (~7.5 MB at 4 gas per
# zero byte), so anything above this is corruption, not data.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_SEGMENT_SUFFIX = ".log"
# How often the background thread fsyncs records that no caller is waiting for.
FLUSH_INTERVAL_S = 0.01

_KIND_TX = 1
_KIND_MINE = 2
_KIND_SET_BALANCE = 3
_KIND_TIME = 4
_TX_HEAD = struct.Struct("<BQQ")  # kind, block number, timestamp
_MINE = struct.Struct("<BQQ")  # kind, block number, timestamp
_SET_BALANCE = struct.Struct("<B20s32s")  # kind, address, balance (big-endian uint256)
_TIME = struct.Struct("<Bq?Q")  # kind, clock offset, has pinned timestamp, pinned timestamp


@dataclass(frozen=True, slots=True)
class TxEntry:
    """A raw transaction mined as block `number` at `timestamp`."""

    number: int
    timestamp: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class MineEntry:
    """An empty block `number` mined at `timestamp` (`evm_mine`)."""

    number: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class SetBalanceEntry:
    """A dev-control balance overwrite (`anvil_setBalance`)."""

    address: bytes
    balance_wei: int


@dataclass(frozen=True, slots=True)
class TimeEntry:
    """The chain clock after a time-control call: offset and pinned next timestamp (if any)."""

    offset_s: int
    next_timestamp: int | None


JournalEntry = TxEntry | MineEntry | SetBalanceEntry | TimeEntry


@dataclass(frozen=True, slots=True, order=True)
class JournalPosition:
    """Where replay starts: a segment number and a byte offset inside it."""

    segment: int
    offset: int


def frame(payload: bytes) -> bytes:
    """`payload` with its length and checksum in front."""
    return _FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes, start: int = 0) -> tuple[list[bytes], int]:
    """The intact payloads framed in `data[start:]` and the offset just after the last one.

    Reading stops at the first truncated or corrupt frame; the caller decides whether that is
    a torn tail (expected after a crash) or damage in the middle.
    """
    payloads: list[bytes] = []
    offset = start
    end = len(data)
    while offset + _FRAME_HEADER.size <= end:
        length, checksum = _FRAME_HEADER.unpack_from(data, offset)
        body_start = offset + _FRAME_HEADER.size
        if length > MAX_RECORD_BYTES or body_start + length > end:
            break
        payload = data[body_start : body_start + length]
        if zlib.crc32(payload) != checksum:
            break
        payloads.append(payload)
        offset = body_start + length
    return payloads, offset


def encode_entry(entry: JournalEntry) -> bytes:
    """The binary payload of one journal entry."""
    match entry:
        case TxEntry(number, timestamp, raw):
            return _TX_HEAD.pack(_KIND_TX, number, timestamp) + raw
        case MineEntry(number, timestamp):
            return _MINE.pack(_KIND_MINE, number, timestamp)
        case SetBalanceEntry(address, balance_wei):
            return _SET_BALANCE.pack(_KIND_SET_BALANCE, address, balance_wei.to_bytes(32, "big"))
        case TimeEntry(offset_s, next_timestamp):
            pinned = next_timestamp is not None
            return _TIME.pack(_KIND_TIME, offset_s, pinned, next_timestamp or 0)
    raise TypeError(f"not a journal entry: {entry!r}")


def decode_entry(payload: bytes) -> JournalEntry:
    """The journal entry encoded in `payload`; raises `ChainError` for an unknown kind."""
    kind = payload[0] if payload else 0
    if kind == _KIND_TX:
        _, number, timestamp = _TX_HEAD.unpack_from(payload)
        return TxEntry(number, timestamp, payload[_TX_HEAD.size :])
    if kind == _KIND_MINE:
        _, number, timestamp = _MINE.unpack(payload)
        return MineEntry(number, timestamp)
    if kind == _KIND_SET_BALANCE:
        _, address, balance = _SET_BALANCE.unpack(payload)
        return SetBalanceEntry(address, int.from_bytes(balance, "big"))
    if kind == _KIND_TIME:
        _, offset_s, pinned, next_timestamp = _TIME.unpack(payload)
        return TimeEntry(offset_s, next_timestamp if pinned else None)
    raise ChainError(f"unknown journal entry kind {kind}: the journal is damaged")


def fsync_directory(directory: Path) -> None:
    """Make a file creation, rename or deletion inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_path(directory: Path, segment: int) -> Path:
    return directory / f"{segment:020d}{_SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """The segment numbers present in `directory`, ascending."""
    if not directory.is_dir():
        return []
    return sorted(int(path.stem) for path in directory.glob(f"*{_SEGMENT_SUFFIX}") if path.stem.isdigit())


def replay_entries(directory: Path, start: JournalPosition) -> tuple[list[JournalEntry], JournalPosition]:
    """Every entry from `start` on, and the position right after the last intact one.

    A torn record at the end of the newest segment (a crash mid-write) is cut off the file; a
    damaged record anywhere else raises `ChainError`, since dropping it would lose later writes.
    """
    segments = [segment for segment in list_segments(directory) if segment >= start.segment]
    entries: list[JournalEntry] = []
    end = start
    for index, segment in enumerate(segments):
        path = _segment_path(directory, segment)
        data = path.read_bytes()
        offset = start.offset if segment == start.segment else 0
        if offset > len(data):
            raise ChainError(f"journal segment {path} is shorter than the snapshot says ({offset} bytes)")
        payloads, valid_end = read_frames(data, offset)
        if valid_end < len(data):
            if index != len(segments) - 1:
                raise ChainError(f"journal segment {path} is damaged at byte {valid_end}")
            with path.open("r+b") as handle:
                handle.truncate(valid_end)
                os.fsync(handle.fileno())
        entries.extend(decode_entry(payload) for payload in payloads)
        end = JournalPosition(segment, valid_end)
    return entries, end


class Journal:
    """Appends framed entries to the newest segment; waiters and a background thread fsync them.

    `append` runs under the node's lock and only writes; `sync_through` fsyncs whatever was
    written so far unless another thread's fsync is under way (then it waits for that one), so
    one fsync covers every writer waiting (group commit).
    """

    def __init__(
        self, directory: Path, position: JournalPosition, *, fsync: bool = True, wait_for_fsync: bool = True
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._fsync = fsync
        self._wait_for_fsync = fsync and wait_for_fsync
        self._segment = position.segment
        self._fd = self._open_segment(position.segment, position.offset)
        self._size = position.offset
        # Tickets: records written so far, and how many of them are known durable.
        self._written = 0
        self._synced = 0
        self._flushing = False
        self._closing = False
        self._failed: str | None = None
        self._changed = threading.Condition()
        self._flusher: threading.Thread | None = None
        if fsync:
            self._flusher = threading.Thread(target=self._flush_loop, name="covey-journal-fsync", daemon=True)
            self._flusher.start()

    @property
    def written(self) -> int:
        """The ticket of the latest record written (0 before the first)."""
        return self._written

    @property
    def position(self) -> JournalPosition:
        """Where the next record will go."""
        return JournalPosition(self._segment, self._size)

    def _open_segment(self, segment: int, size: int) -> int:
        path = _segment_path(self.directory, segment)
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        if not existed:
            fsync_directory(self.directory)
        return fd

    def append(self, entry: JournalEntry) -> int:
        """Write `entry` and wake the flusher; returns the ticket to pass to `sync_through`."""
        if self._failed:
            raise ChainError(f"the chain journal stopped accepting writes: {self._failed}")
        record = frame(encode_entry(entry))
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            self._undo_partial_write(exc)
            raise ChainError(f"cannot write the chain journal: {exc}") from exc
        self._size += len(record)
        with self._changed:
            self._written += 1
            if not self._fsync:
                self._synced = self._written
                self._changed.notify_all()
            return self._written

    def truncate(self, position: JournalPosition) -> None:
        """Cut off the records written after `position` (which must be in the open segment)."""
        if position.segment != self._segment or position.offset > self._size:
            raise ChainError(f"cannot truncate the journal back to {position}: it is at {self.position}")
        with self._changed:
            self._wait_until_idle()
            os.ftruncate(self._fd, position.offset)
            self._size = position.offset
            self._sync_now()

    def _undo_partial_write(self, exc: OSError) -> None:
        # A torn record followed by good ones would hide them on replay, so cut it off now.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as truncate_error:
            self._failed = f"{exc}; then truncating failed: {truncate_error}"

    def sync_through(self, ticket: int) -> None:
        """Return once record `ticket` is committed; raises `ChainError` if the fsync failed.

        Committed means fsynced, or with `wait_for_fsync=False` written to the OS (at once).
        """
        if self._synced >= ticket:
            return
        if not self._wait_for_fsync:
            if self._failed:
                raise ChainError(f"cannot make the chain journal durable: {self._failed}")
            return
        while True:
            with self._changed:
                if self._synced >= ticket:
                    return
                if self._failed:
                    raise ChainError(f"cannot make the chain journal durable: {self._failed}")
                if self._fd < 0:
                    raise ChainError("the chain journal is closed")
                if self._flushing:
                    self._changed.wait()  # that fsync may cover our record; if not, we run the next
                    continue
            self._flush_once()

    def _flush_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closing, timeout=FLUSH_INTERVAL_S)
                if self._closing:
                    return
            self._flush_once()

    def _flush_once(self) -> None:
        """fsync every record written so far, unless that is done or another thread is at it."""
        with self._changed:
            if self._flushing or self._synced >= self._written or self._fd < 0:
                return
            target, fd = self._written, self._fd
            self._flushing = True
        try:
            os.fdatasync(fd)
            failure = None
        except OSError as exc:
            failure = str(exc)
        with self._changed:
            self._flushing = False
            if failure is None:
                self._synced = max(self._synced, target)
            else:
                # After a failed fsync the kernel may have dropped the dirty pages: stop writing.
                self._failed = f"fsync failed: {failure}"
            self._changed.notify_all()

    def _wait_until_idle(self) -> None:
        """With `_changed` held: wait for an fsync in flight, so the fd can change under us."""
        while self._flushing:
            self._changed.wait()

    def _sync_now(self) -> None:
        """With `_changed` held and the flusher idle: fsync everything written, in this thread."""
        if self._fsync:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._failed = f"fsync failed: {exc}"
                raise ChainError(f"cannot make the chain journal durable: {exc}") from exc
        self._synced = self._written
        self._changed.notify_all()

    def rotate(self) -> JournalPosition:
        """Make everything durable and start a new, empty segment; returns its position."""
        with self._changed:
            self._wait_until_idle()
            self._sync_now()
            new_fd = self._open_segment(self._segment + 1, 0)
            os.close(self._fd)
            self._fd = new_fd
            self._segment += 1
            self._size = 0
        return self.position

    def drop_segments_before(self, segment: int) -> None:
        """Delete segments older than `segment` (a durable snapshot covers them)."""
        for old in list_segments(self.directory):
            if old < segment:
                _segment_path(self.directory, old).unlink(missing_ok=True)

    def close(self) -> None:
        """Sync, stop the flusher and close the open segment."""
        if self._fd < 0:
            return
        try:
            with self._changed:
                self._wait_until_idle()
                self._sync_now()
        finally:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            if self._flusher is not None:
                self._flusher.join()
            os.close(self._fd)
            self._fd = -1
