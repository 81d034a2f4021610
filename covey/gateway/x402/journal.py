"""The batched-settlement journal: accepted payments made durable (fsync) before the gateway answers.

One JSON object per line in `payments.jsonl`: `{"op": "accept", "key", "payload", "requirements", "expires"}`
when a payment is accepted, `{"op": "settle", "key", "success", "transaction", "reason", "expires"}` once it
is final. The pending payments are the accepted keys without a settle line. Concurrent appends share one
fsync (group commit). A crash can only tear the last line, whose request was never answered: it is dropped
on open.

The journal also remembers, across restarts, every key it has accepted until the payment expires
(`expires`: the authorisation's `validBefore`), so a payment settled in an earlier run is refused as spent
(`spent`), not served again. The first line, `{"op": "meta", "complete_after": T}`, says how far that record
reaches: every payment this journal accepted that expires after T is in it. Before the journal existed
nothing was recorded, so a new journal (or one written before the record was kept) starts with T = now
plus the longest a payment lives; a key evicted to bound memory raises T to its expiry. Payments expiring
by T may have been settled unrecorded: the caller asks the chain about those.
"""

from __future__ import annotations

import heapq
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from covey.gateway.x402.errors import JournalBusyError, JournalError

JOURNAL_FILE = "payments.jsonl"
LOCK_FILE = "journal.lock"
# Rewrite the file without its settled history once it grows past this (and past twice what the last rewrite
# kept) and nothing is pending.
COMPACT_AT_BYTES = 64 * 1024 * 1024
# Spent keys kept in memory at most (~280 bytes each with their index: ~56 MB), about 280 payments a second
# for the default 600 s validity. Past this the earliest-expiring are dropped and the record's horizon moves
# past them: fresh payments expire later and stay vouched for, only older ones are then asked of the chain.
MAX_SPENT_KEYS = 200_000
# A payment of unknown expiry (the caller did not say) is remembered until memory pressure evicts it.
NEVER = 2**63 - 1
# A spent key is kept this long past its expiry: clocks disagree a little about when a payment expired.
EXPIRY_SLACK_S = 120
DEFAULT_RECORD_HORIZON_S = 3600


@dataclass(frozen=True)
class JournalEntry:
    """An accepted payment as journaled: the raw wire objects, so a restart settles exactly what was signed."""

    key: str
    payload: dict[str, Any]
    requirements: dict[str, Any]
    expires_at: int | None = None
    """Unix time after which the payment cannot settle (its `validBefore`); `None` when unknown."""


class PaymentJournal:
    """An append-only, fsynced log of accepted and settled payments in `directory`, owned by one process.

    `horizon_s`: how long before its creation a payment may have been settled unrecorded (the longest a
    payment lives, plus clock skew); it sets the record's first `complete_after`.
    """

    def __init__(self, directory: Path, *, horizon_s: int = DEFAULT_RECORD_HORIZON_S) -> None:
        self.directory = Path(directory)
        self.horizon_s = horizon_s
        self.complete_after = 0
        self._spent: dict[str, int] = {}  # key -> expiry: accepted and final, refused if offered again
        self._expiries: list[tuple[int, str]] = []  # a min-heap over `_spent`, to drop the expired first
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / JOURNAL_FILE
        self._compacted_size = 0
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

    def spent(self, key: str) -> bool:
        """Whether this journal accepted `key` before (pending, or settled and not yet expired): one dict lookup."""
        with self._cond:
            return key in self._pending or key in self._spent

    def _recover(self) -> dict[str, JournalEntry]:
        pending: dict[str, JournalEntry] = {}
        if not self.path.exists():
            self.complete_after = int(time.time()) + self.horizon_s
            self._rewrite([])
            return pending
        records, torn = _read_records(self.path)
        meta = records[0] if records and records[0].get("op") == "meta" else None
        # A file without the header was written before spent keys were kept: its history is gone.
        self.complete_after = int(meta["complete_after"]) if meta else int(time.time()) + self.horizon_s
        for record in records:
            if record.get("op") == "accept":
                key = record["key"]
                pending[key] = JournalEntry(key, record["payload"], record["requirements"], record.get("expires"))
            elif record.get("op") == "settle":
                entry = pending.pop(record["key"], None)
                expires = record.get("expires", entry.expires_at if entry else None)
                if meta is not None or expires is not None:
                    self._remember_spent(record["key"], NEVER if expires is None else int(expires))
        self._forget_expired()
        if torn or meta is None or len(records) != 1 + len(self._spent) + len(pending):
            # One atomic rewrite drops the torn tail and the history nobody needs: pending and spent keys remain.
            self._rewrite(list(pending.values()))
        return pending

    def _remember_spent(self, key: str, expires: int) -> None:
        """Record `key` as spent until `expires` (under the lock, or before the journal is shared)."""
        self._spent[key] = expires
        heapq.heappush(self._expiries, (expires, key))

    def _forget_expired(self) -> None:
        """Drop spent keys past expiry, then the earliest-expiring beyond the memory bound (under the lock)."""
        now = int(time.time())
        while self._expiries:
            expires, key = self._expiries[0]
            if self._spent.get(key) != expires:  # superseded entry
                heapq.heappop(self._expiries)
                continue
            if expires + EXPIRY_SLACK_S < now:
                heapq.heappop(self._expiries)
                del self._spent[key]
            elif len(self._spent) > MAX_SPENT_KEYS:
                heapq.heappop(self._expiries)
                del self._spent[key]
                # The record no longer covers payments expiring by this one's expiry: the chain must.
                self.complete_after = max(self.complete_after, expires)
            else:
                break

    # -- writing -------------------------------------------------------------------------------------

    def append_accepted(
        self, key: str, payload: dict[str, Any], requirements: dict[str, Any], *, expires_at: int | None = None
    ) -> None:
        """Durably record an accepted payment; returns only after fsync, so the answer may go out.

        `expires_at` (the authorisation's `validBefore`) is how long the key must stay refused once settled.
        """
        # Pending first: a compaction that runs meanwhile must rewrite this entry, not drop it.
        with self._cond:
            self._pending[key] = JournalEntry(key, payload, requirements, expires_at)
        record = {"op": "accept", "key": key, "payload": payload, "requirements": requirements, "expires": expires_at}
        try:
            self._append([record])
        except JournalError:
            with self._cond:
                self._pending.pop(key, None)
            raise

    def append_settled(self, outcomes: Iterable[tuple[str, bool, str, str | None]]) -> None:
        """Durably record final outcomes: (key, success, transaction, reason)."""
        outcomes = list(outcomes)
        if not outcomes:
            return
        with self._cond:
            expiries = {key: self._expiry(key) for key, *_rest in outcomes}
        self._append(
            [
                {
                    "op": "settle",
                    "key": key,
                    "success": success,
                    "transaction": tx,
                    "reason": reason,
                    "expires": expiries[key],
                }
                for key, success, tx, reason in outcomes
            ]
        )
        with self._cond:
            for key, *_rest in outcomes:
                # Spent before it stops being pending: `spent(key)` never has a gap in between.
                self._remember_spent(key, expiries[key])
                self._pending.pop(key, None)
            self._forget_expired()
            should_compact = not self._pending and self._file.tell() > max(COMPACT_AT_BYTES, 2 * self._compacted_size)
        if should_compact:
            self._compact()

    def _expiry(self, key: str) -> int:
        entry = self._pending.get(key)
        return NEVER if entry is None or entry.expires_at is None else entry.expires_at

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
            spent = list(self._spent.items())
        try:
            self._file.close()
            self._rewrite(entries, spent)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the journal's life
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def _rewrite(self, entries: list[JournalEntry], spent: list[tuple[str, int]] | None = None) -> None:
        """Replace the file by the header, `spent` keys and `entries` (pending), atomically (temp, fsync, rename).

        `spent` defaults to every spent key (while the journal is opened, before anyone else can touch it).
        """
        records: list[dict[str, Any]] = [{"op": "meta", "complete_after": self.complete_after}]
        spent = list(self._spent.items()) if spent is None else spent
        records += [{"op": "settle", "key": key, "expires": expires} for key, expires in spent]
        records += [
            {
                "op": "accept",
                "key": entry.key,
                "payload": entry.payload,
                "requirements": entry.requirements,
                "expires": entry.expires_at,
            }
            for entry in entries
        ]
        data = b"".join(json.dumps(record, separators=(",", ":")).encode() + b"\n" for record in records)
        temp = self.path.with_suffix(".tmp")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        self._fsync_directory()
        self._compacted_size = len(data)

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
