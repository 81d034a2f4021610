"""The batched-settlement journal: accepted payments made durable (fsync) before the gateway answers.

One JSON object per line in `payments.jsonl`: `{"op": "accept", "key", "payload", "requirements"}` when a
payment is accepted, `{"op": "settle", "key", "success", "transaction", "reason"}` once it is final. The
pending payments are the accepted keys without a settle line. Concurrent appends share one fsync (group
commit). A crash can only tear the last line, whose request was never answered: it is dropped on open.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from covey.gateway.x402.errors import JournalBusyError, JournalError

JOURNAL_FILE = "payments.jsonl"
LOCK_FILE = "journal.lock"
# Rewrite the file without its settled history once it grows past this and nothing is pending.
COMPACT_AT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class JournalEntry:
    """An accepted payment as journaled: the raw wire objects, so a restart settles exactly what was signed."""

    key: str
    payload: dict[str, Any]
    requirements: dict[str, Any]


class PaymentJournal:
    """An append-only, fsynced log of accepted and settled payments in `directory`, owned by one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JOURNAL_FILE
        # Two processes on one journal would both settle its pending payments: refuse the second.
        self._lock = FileLock(str(self.directory / LOCK_FILE))
        try:
            self._lock.acquire(timeout=0)
        except Timeout as exc:
            raise JournalBusyError(f"settlement journal {self.directory} is held by another process") from exc
        try:
            self._pending = self._recover()
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the journal's life
        except BaseException:
            self._lock.release()
            raise
        self._cond = threading.Condition()
        self._buffer: list[bytes] = []
        self._next_seq = 1  # sequence number of the next line handed to `_append`
        self._durable_seq = 0  # every line up to this one is on disk
        self._writing = False
        self._failed: JournalError | None = None

    # -- reading -------------------------------------------------------------------------------------

    def pending(self) -> list[JournalEntry]:
        """Accepted payments without a final settle record, oldest first."""
        with self._cond:
            return list(self._pending.values())

    def _recover(self) -> dict[str, JournalEntry]:
        pending: dict[str, JournalEntry] = {}
        if not self.path.exists():
            self._rewrite([])
            return pending
        records, torn = _read_records(self.path)
        for record in records:
            if record.get("op") == "accept":
                pending[record["key"]] = JournalEntry(record["key"], record["payload"], record["requirements"])
            elif record.get("op") == "settle":
                pending.pop(record["key"], None)
        if torn or len(pending) != len(records):
            # Drop the torn tail and the settled history in one atomic rewrite: only pending payments remain.
            self._rewrite(list(pending.values()))
        return pending

    # -- writing -------------------------------------------------------------------------------------

    def append_accepted(self, key: str, payload: dict[str, Any], requirements: dict[str, Any]) -> None:
        """Durably record an accepted payment; returns only after fsync, so the answer may go out."""
        # Pending first: a compaction that runs meanwhile must rewrite this entry, not drop it.
        with self._cond:
            self._pending[key] = JournalEntry(key, payload, requirements)
        try:
            self._append([{"op": "accept", "key": key, "payload": payload, "requirements": requirements}])
        except JournalError:
            with self._cond:
                self._pending.pop(key, None)
            raise

    def append_settled(self, outcomes: Iterable[tuple[str, bool, str, str | None]]) -> None:
        """Durably record final outcomes: (key, success, transaction, reason)."""
        outcomes = list(outcomes)
        if not outcomes:
            return
        self._append(
            [
                {"op": "settle", "key": key, "success": success, "transaction": tx, "reason": reason}
                for key, success, tx, reason in outcomes
            ]
        )
        with self._cond:
            for key, *_rest in outcomes:
                self._pending.pop(key, None)
            should_compact = not self._pending and self._file.tell() > COMPACT_AT_BYTES
        if should_compact:
            self._compact()

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Group commit: whoever finds no write under way writes every buffered line with one fsync."""
        lines = [json.dumps(record, separators=(",", ":")).encode() + b"\n" for record in records]
        with self._cond:
            if self._failed is not None:
                raise self._failed
            self._buffer.extend(lines)
            my_seq = self._next_seq + len(lines) - 1
            self._next_seq += len(lines)
            while self._durable_seq < my_seq:
                if self._failed is not None:
                    raise self._failed
                if self._writing:
                    self._cond.wait()
                    continue
                batch, self._buffer = self._buffer, []
                upto = self._next_seq - 1
                self._writing = True
                self._cond.release()
                try:
                    self._file.write(b"".join(batch))
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    # A failed fsync leaves the file's state unknown: stop accepting rather than guess.
                    error = JournalError(f"cannot make the settlement journal {self.path} durable: {exc}")
                    self._cond.acquire()
                    self._failed = error
                    self._writing = False
                    self._cond.notify_all()
                    raise error from exc
                self._cond.acquire()
                self._writing = False
                self._durable_seq = upto
                self._cond.notify_all()

    def _compact(self) -> None:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._writing = True
            entries = list(self._pending.values())
        try:
            self._file.close()
            self._rewrite(entries)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the journal's life
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def _rewrite(self, entries: list[JournalEntry]) -> None:
        """Replace the file by one holding only `entries`, atomically (temp file, fsync, rename)."""
        temp = self.path.with_suffix(".tmp")
        with open(temp, "wb") as handle:
            for entry in entries:
                record = {
                    "op": "accept",
                    "key": entry.key,
                    "payload": entry.payload,
                    "requirements": entry.requirements,
                }
                handle.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        # A new or renamed file is durable only once its directory entry is.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the file and let another process take the journal."""
        with self._cond:
            if not self._file.closed:
                self._file.close()
        self._lock.release()


def _read_records(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The journal's records, and whether a torn tail was found after them.

    Only unanswered writes can be lost in a crash, and they are always the file's tail: a final line
    without its newline, or (after a power cut) lines of garbage with nothing valid after them. A bad
    line followed by a good one is real corruption and raises.
    """
    lines = path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    first_bad: int | None = None
    for number, line in enumerate(lines[:-1], start=1):  # what follows the last newline is torn or empty
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            first_bad = first_bad or number
            continue
        if first_bad is not None:
            raise JournalError(f"settlement journal {path} is corrupt at line {first_bad} (valid records follow it)")
        records.append(record)
    return records, first_bad is not None or lines[-1] != b""
