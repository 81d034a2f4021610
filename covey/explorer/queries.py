"""The read models the pages show: the index (events) joined with live chain views, one function per page.

`Explorer` owns the index connection (one per thread) and the live views; the capability pages have their
own modules (`arena_view`, `alliance_view`, `compute_view`, `gateway_view`) built on `Explorer.events`.
Nothing here writes: the indexer is the only writer.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covey.chain import Chain
from covey.explorer.decoding import checksum
from covey.explorer.errors import NotFound
from covey.explorer.index_db import open_index
from covey.explorer.live import ChainFigures, LiveViews
from covey.explorer.model_scores import ModelScorer

ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
SUBJECT_RE = re.compile(r"^(?:(task|job|alliance|block)\s*#?\s*)?#?(\d{1,18})$", re.IGNORECASE)
PAGE_SIZE = 50
ACTIVITY_BARS = 30


@dataclass(frozen=True)
class Event:
    """One indexed log, decoded."""

    id: int
    block: int
    log_index: int
    tx_hash: str
    address: str
    contract: str
    event: str
    ref: int | None
    ref2: int | None
    args: dict[str, Any]
    ts: int

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        return cls(
            id=int(row["id"]),
            block=int(row["block"]),
            log_index=int(row["log_index"]),
            tx_hash=str(row["tx_hash"]),
            address=str(row["address"]),
            contract=str(row["contract"]),
            event=str(row["event"]),
            ref=row["ref"],
            ref2=row["ref2"],
            args=json.loads(row["args"]),
            ts=int(row["ts"]),
        )


@dataclass(frozen=True)
class Status:
    """Where the chain and the index stand."""

    chain_id: int | None
    backend: str
    head_block: int
    head_ts: int | None
    indexed_block: int
    event_count: int
    polled_at: float | None
    suite_error: str | None
    contracts: dict[str, str]
    models_scored: int = 0  # alliance models the explorer has evaluated: a page changes when this does

    @property
    def stamp(self) -> str:
        """What the page's auto-refresh compares: it reloads when any of these move."""
        return f"{self.indexed_block}:{self.event_count}:{self.models_scored}"

    @property
    def lag_blocks(self) -> int:
        return max(0, self.head_block - self.indexed_block)

    @property
    def deployed(self) -> bool:
        return bool(self.contracts)

    def as_json(self) -> dict[str, Any]:
        return {
            "chainId": self.chain_id,
            "backend": self.backend,
            "headBlock": self.head_block,
            "headTimestamp": self.head_ts,
            "indexedBlock": self.indexed_block,
            "eventCount": self.event_count,
            "lagBlocks": self.lag_blocks,
            "deployed": self.deployed,
            "suiteError": self.suite_error,
            "stamp": self.stamp,
        }


@dataclass(frozen=True)
class Bucket:
    """Events in a range of blocks, for the activity chart."""

    first_block: int
    last_block: int
    count: int


@dataclass(frozen=True)
class Overview:
    status: Status
    figures: ChainFigures
    counts: dict[str, int]  # tasks, alliances, jobs, accounts
    emitted: int  # COV minted by the Treasury's emission, from its events
    slashed: int  # COV slashed through the Staking
    rewarded: int  # COV paid as rewards through the Staking
    activity: list[Bucket]
    recent: list[Event]


@dataclass(frozen=True)
class SearchHit:
    kind: str
    label: str
    url: str


class Explorer:
    """Read access to the index at `path` and to `chain`'s live views, safe to share across threads."""

    def __init__(self, chain: Chain, path: Path) -> None:
        self.chain = chain
        self.path = path
        self._local = threading.local()
        # Create the file and schema now, so a reader never races the indexer to make them.
        open_index(path).close()
        self.live = LiveViews(chain, self.contracts)
        self.model_scores: ModelScorer | None = None  # set by the app when a store is configured

    # -- plumbing -------------------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections must not cross threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self.db().execute("SELECT key, value FROM meta")}

    def contracts(self) -> dict[str, str]:
        """The suite being indexed: name -> checksummed address."""
        return {row["name"]: row["address"] for row in self.db().execute("SELECT name, address FROM contracts")}

    def names(self) -> dict[str, str]:
        """Address -> suite name, for labelling addresses."""
        return {address: name for name, address in self.contracts().items()}

    def events(
        self,
        where: str = "1",
        params: Sequence[Any] = (),
        *,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Event]:
        """Events matching the SQL condition `where` (on table `events`), in chain order."""
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT * FROM events WHERE {where} ORDER BY block {order}, log_index {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [Event.from_row(row) for row in self.db().execute(sql, tuple(params))]

    def of(self, contract: str, *names: str, ref: int | None = None) -> list[Event]:
        """Events of `contract` named any of `names` (all if none), optionally about one subject id."""
        clauses: list[str] = ["contract = ?"]
        params: list[Any] = [contract]
        if ref is not None:
            clauses.append("ref = ?")
            params.append(ref)
        if names:
            clauses.append(f"event IN ({','.join('?' * len(names))})")
            params.extend(names)
        return self.events(" AND ".join(clauses), params)

    def count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        return int(self.db().execute(f"SELECT COUNT(*) FROM events WHERE {where}", tuple(params)).fetchone()[0])

    # -- status and overview --------------------------------------------------------------------------

    def status(self) -> Status:
        meta = self.meta()
        return Status(
            chain_id=self.chain.chain_id,
            backend=self.chain.backend,
            head_block=int(meta.get("head_block", 0)),
            head_ts=int(meta["head_ts"]) if "head_ts" in meta else None,
            indexed_block=int(meta.get("indexed_block", 0)),
            event_count=int(meta.get("event_count", 0)),
            polled_at=float(meta["polled_at"]) if "polled_at" in meta else None,
            suite_error=meta.get("suite_error") or None,
            contracts=self.contracts(),
            models_scored=self.model_scores.scored if self.model_scores is not None else 0,
        )

    def overview(self) -> Overview:
        status = self.status()
        figures = self.live.figures(status.head_block) if status.deployed else ChainFigures()
        subjects = {
            kind: int(row[0])
            for kind, (contract, event) in {
                "tasks": ("Arena", "TaskCreated"),
                "alliances": ("Alliance", "AllianceCreated"),
                "jobs": ("Market", "JobPosted"),
            }.items()
            for row in self.db().execute(
                "SELECT COUNT(*) FROM events WHERE contract = ? AND event = ?", (contract, event)
            )
        }
        subjects["accounts"] = int(
            self.db().execute("SELECT COUNT(DISTINCT account) FROM event_accounts").fetchone()[0]
        )
        emitted = sum(int(e["amount"]) for e in self.of("Treasury", "EmissionMinted"))
        slashed = sum(int(e["amount"]) for e in self.of("Staking", "Slashed"))
        rewarded = sum(int(e["amount"]) for e in self.of("Staking", "RewardDistributed"))
        return Overview(
            status=status,
            figures=figures,
            counts=subjects,
            emitted=emitted,
            slashed=slashed,
            rewarded=rewarded,
            activity=self.activity(status.indexed_block),
            recent=self.events(limit=15, newest_first=True),
        )

    def activity(self, last_block: int, bars: int = ACTIVITY_BARS) -> list[Bucket]:
        """Events per equal range of blocks, from the first indexed event to `last_block`."""
        first = self.db().execute("SELECT MIN(block) FROM events").fetchone()[0]
        if first is None or last_block < first:
            return []
        width = max(1, -(-(last_block - first + 1) // bars))
        counts = dict(
            self.db()
            .execute("SELECT (block - ?) / ? AS bucket, COUNT(*) FROM events GROUP BY bucket", (first, width))
            .fetchall()
        )
        buckets = -(-(last_block - first + 1) // width)
        return [
            Bucket(first + i * width, min(last_block, first + (i + 1) * width - 1), int(counts.get(i, 0)))
            for i in range(buckets)
        ]

    def recent_page(
        self, page: int, contract: str | None = None, event: str | None = None, ref: int | None = None
    ) -> tuple[list[Event], int]:
        """One page of events (newest first), optionally of one contract, event and subject id; and the page count."""
        clauses: list[str] = ["1"]
        params: list[Any] = []
        for column, value in (("contract", contract), ("event", event), ("ref", ref)):
            if value is not None and value != "":
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        total = self.count(where, params)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(1, page), pages)
        return self.events(where, params, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, newest_first=True), pages

    # -- transactions and search ----------------------------------------------------------------------

    def transaction(self, text: str) -> tuple[dict[str, Any], list[Event]]:
        """A transaction and the suite events it emitted; `NotFound` when neither the index nor the chain has it."""
        if not HASH_RE.match(text.strip()):
            raise NotFound(f"{text!r} is not a transaction hash (0x and 64 hex digits)")
        tx_hash = text.strip().lower()
        events = self.events("tx_hash = ?", (tx_hash,))
        tx = self.live.transaction(tx_hash)
        if tx is None and not events:
            raise NotFound(f"no transaction {tx_hash} on chain {self.chain.chain_id}")
        return tx or {"hash": tx_hash, "block": events[0].block}, events

    def search(self, text: str) -> list[SearchHit]:
        """What `text` may mean: an address, a transaction, a task, alliance or job id, or a block."""
        query = text.strip()
        if ADDRESS_RE.match(query):
            return [SearchHit("account", checksum(query), f"/accounts/{checksum(query)}")]
        if HASH_RE.match(query):
            hits = []
            if self.count("tx_hash = ?", (query.lower(),)) or self.live.transaction(query.lower()):
                hits.append(SearchHit("transaction", query.lower(), f"/tx/{query.lower()}"))
            return hits
        match = SUBJECT_RE.match(query)
        if not match:
            return []
        kind, number = (match.group(1) or "").lower(), int(match.group(2))
        hits = []
        subjects = (
            ("task", "Arena", "TaskCreated", f"/arena/tasks/{number}"),
            ("alliance", "Alliance", "AllianceCreated", f"/alliance/{number}"),
            ("job", "Market", "JobPosted", f"/compute/jobs/{number}"),
        )
        for name, contract, event, url in subjects:
            if kind in ("", name) and self.count("contract = ? AND event = ? AND ref = ?", (contract, event, number)):
                hits.append(SearchHit(name, f"{name} {number}", url))
        if kind in ("", "block") and number <= self.status().head_block:
            hits.append(SearchHit("block", f"block {number}", f"/events?block={number}"))
        return hits


def parse_address(text: str) -> str:
    """A checksummed address, or `NotFound` saying what an address looks like."""
    candidate = text.strip()
    if not ADDRESS_RE.match(candidate):
        raise NotFound(f"{candidate[:80]!r} is not an address (0x and 40 hex digits)")
    return checksum(candidate)


def parse_id(text: str, what: str) -> int:
    """A positive integer id, or `NotFound` naming what was expected."""
    candidate = text.strip().lstrip("#")
    if not candidate.isdigit() or len(candidate) > 18 or int(candidate) < 1:
        raise NotFound(f"{text[:80]!r} is not a {what} id (a whole number from 1)")
    return int(candidate)
