"""The event indexer: every log of every suite contract, decoded into SQLite, resuming where it stopped.

`Indexer.poll()` asks the chain for logs in block ranges (`eth_getLogs`, one call for all contracts whose
cursor is at the same block), decodes them with each contract's ABI and stores them with their cursor
advance in one transaction, so a crash or restart neither loses nor repeats an event; the unique key
(tx hash, log index) makes a repeated range harmless anyway. The suite comes from the deployment
manifest plus the on-chain Registry; a redeployed suite drops the old contracts' rows, and a restarted
chain (new genesis) empties the index.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from covey.chain import Chain, compile_contract
from covey.chain.deploy import Deployment, manifest_path
from covey.config import Settings, get_settings
from covey.errors import ChainError
from covey.explorer.decoding import EventDecoder, checksum

log = logging.getLogger("covey.explorer.indexer")

INDEX_DIR = "explorer"
INDEX_FILE = "index.sqlite"
SCHEMA_VERSION = 1
DEFAULT_BATCH_BLOCKS = 2_000
RESYNC_INTERVAL_S = 30.0  # re-check the manifest, Registry and genesis even when the manifest file is unchanged
MAX_TIMESTAMP_CACHE = 4_096

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contracts (
    address TEXT PRIMARY KEY,          -- checksummed
    name TEXT NOT NULL,                -- the suite name, also the ABI's file name
    start_block INTEGER NOT NULL,      -- its deployment block: where indexing started
    next_block INTEGER NOT NULL        -- the cursor: the first block not indexed yet
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    block INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_hash TEXT NOT NULL,
    address TEXT NOT NULL,
    contract TEXT NOT NULL,
    event TEXT NOT NULL,
    ref INTEGER,                       -- first indexed uint256 arg: task, alliance or job id
    ref2 INTEGER,                      -- second one: the alliance round
    args TEXT NOT NULL,                -- JSON; integers exact (Python's json keeps big ints)
    ts INTEGER NOT NULL,
    UNIQUE (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS events_subject ON events (contract, ref, ref2, event);
CREATE INDEX IF NOT EXISTS events_kind ON events (contract, event, block);
CREATE INDEX IF NOT EXISTS events_block ON events (block, log_index);
CREATE INDEX IF NOT EXISTS events_address ON events (address);
CREATE TABLE IF NOT EXISTS event_accounts (
    account TEXT NOT NULL,             -- lower-case address named by the event
    event_id INTEGER NOT NULL REFERENCES events (id),
    PRIMARY KEY (account, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_accounts_event ON event_accounts (event_id);
"""


def index_path(settings: Settings | None = None) -> Path:
    """Where the index lives: `COVEY_HOME/explorer/index.sqlite`."""
    return (settings or get_settings()).subdir(INDEX_DIR) / INDEX_FILE


def open_index(path: Path) -> sqlite3.Connection:
    """A connection to the index at `path` (created with its schema), in WAL mode so readers never block it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The web server reads from a thread pool; each thread gets its own connection (see queries.py),
    # but the indexer's connection is made in one thread and used in its worker thread.
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode loses at most the last commits on power loss, never consistency: a lost
    # commit is re-fetched from the chain because its cursor advance is lost with it.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.executescript(SCHEMA)
    version = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if version is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(version["value"]) != SCHEMA_VERSION:
        raise ChainError(f"the explorer index {path} has schema {version['value']}, expected {SCHEMA_VERSION}")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('event_count', '0')")
    return conn


@dataclass(frozen=True)
class Watched:
    """A contract the indexer follows: its suite name, address and the block to start from."""

    name: str
    address: str
    start_block: int


@dataclass(frozen=True)
class PollResult:
    """What one poll did: events stored (new ones only), blocks covered and the indexed head."""

    events: int
    blocks: int
    indexed_block: int
    head_block: int


def read_manifest(chain: Chain, path: Path) -> Deployment:
    """The deployment manifest at `path`, checked against the chain (as `load_deployment` does).

    The indexer keeps the manifest's path from when it started rather than asking the settings each
    time: a long-running explorer must not follow a COVEY_HOME that changes under it.
    Raises `ChainError` when the file is missing or unreadable, or the chain lacks its contracts.
    """
    if not path.exists():
        raise ChainError(f"no Covey deployment on chain {chain.chain_id}: no manifest at {path}")
    try:
        deployment = Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ChainError(f"unreadable deployment manifest {path}: {exc!r}") from exc
    if deployment.chain_id != chain.chain_id:
        raise ChainError(f"the manifest {path} is for chain {deployment.chain_id}, not {chain.chain_id}")
    for name, address in deployment.contracts.items():
        code = bytes(chain.w3.eth.get_code(address))  # type: ignore[arg-type]
        if "0x" + keccak(code).hex() != deployment.code_hashes.get(name):
            raise ChainError(f"the manifest's {name} at {address} is missing or changed on chain {chain.chain_id}")
    return deployment


def discover_suite(chain: Chain, manifest: Path | None = None) -> list[Watched]:
    """The suite's contracts: the manifest's, plus any the Registry names that the manifest lacks.

    Raises `ChainError` when the chain has no (or a changed) Covey deployment.
    """
    deployment = read_manifest(chain, manifest or manifest_path(chain.chain_id))
    watched = {
        address: Watched(name, address, deployment.blocks.get(name, 0))
        for name, address in deployment.contracts.items()
    }
    registry_block = deployment.blocks.get("Registry", 0)
    if "Registry" in deployment.contracts:
        registry = deployment.contract(chain, "Registry")
        for name in chain.call(registry.functions.names()):
            # The manifest is the authority for what it names; the Registry adds what came later.
            if name in deployment.contracts or not _has_abi(str(name)):
                continue
            address = checksum(str(chain.call(registry.functions.get(name))))
            if address in watched:
                continue
            # Registered after the manifest was written: it was deployed after the Registry, so
            # scanning from the Registry's block finds all its events.
            watched[address] = Watched(str(name), address, registry_block)
    return sorted(watched.values(), key=lambda w: (w.start_block, w.name))


def _has_abi(name: str) -> bool:
    try:
        compile_contract(name)
    except ChainError:
        return False
    return True


class Indexer:
    """Indexes the suite's events from `chain` into the SQLite file at `path`; one writer at a time."""

    def __init__(
        self,
        chain: Chain,
        path: Path | None = None,
        *,
        batch_blocks: int = DEFAULT_BATCH_BLOCKS,
        confirmations: int = 0,
    ) -> None:
        self.chain = chain
        self.path = path or index_path()
        self.batch_blocks = batch_blocks
        self.confirmations = confirmations  # for public chains that reorganise; local chains never do
        self.conn = open_index(self.path)
        self.manifest = manifest_path(chain.chain_id)
        self.suite_error: str | None = None
        self._decoders: dict[str, EventDecoder] = {}
        self._timestamps: dict[int, int] = {}
        self._manifest_stamp: tuple[float, int] | None = None
        self._synced_at: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.conn.close()

    # -- the suite ------------------------------------------------------------------------------------

    def sync_suite(self) -> list[Watched]:
        """Bring the contracts table in line with the chain's current suite; returns what is watched.

        A new genesis block or chain id empties the index (a restarted dev chain); contracts no longer in
        the suite lose their events (a redeployed suite); new ones start from their deployment block.
        When no suite can be read (no manifest yet), what is indexed stays as it is.
        """
        genesis = str(self.chain.w3.eth.get_block(0)["hash"].hex())
        identity = f"{self.chain.chain_id}:{genesis}"
        watched: list[Watched] | None
        try:
            watched = discover_suite(self.chain, self.manifest)
            self.suite_error = None
        except ChainError as exc:
            watched, self.suite_error = None, str(exc)
        with self._transaction() as conn:
            if self._meta(conn, "chain") != identity:
                self._wipe(conn)
                self._set_meta(conn, "chain", identity)
            self._set_meta(conn, "chain_id", str(self.chain.chain_id))
            known = {row["address"]: row for row in conn.execute("SELECT * FROM contracts")}
            wanted: dict[str, Watched | None] = (
                {w.address: w for w in watched} if watched is not None else dict.fromkeys(known)
            )
            for address in set(known) - set(wanted):
                self._drop_contract(conn, address)
            for address, w in wanted.items():
                if w is None:
                    continue
                if address not in known:
                    conn.execute(
                        "INSERT INTO contracts (address, name, start_block, next_block) VALUES (?, ?, ?, ?)",
                        (address, w.name, w.start_block, w.start_block),
                    )
                elif known[address]["name"] != w.name:
                    conn.execute("UPDATE contracts SET name=? WHERE address=?", (w.name, address))
            self._set_meta(conn, "suite_error", self.suite_error or "")
            self._set_meta(conn, "suite_synced_at", str(int(time.time())))
        self._manifest_stamp = self._stamp()
        self._synced_at = time.monotonic()
        return watched or []

    def _stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.manifest.stat()
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def _suite_changed(self) -> bool:
        if self._synced_at is None or time.monotonic() - self._synced_at > RESYNC_INTERVAL_S:
            return True
        return self._stamp() != self._manifest_stamp

    # -- polling --------------------------------------------------------------------------------------

    def poll(self, max_ranges: int | None = None) -> PollResult:
        """Index every block up to the head (or `max_ranges` getLogs calls); returns what was stored."""
        with self._lock:
            if self._suite_changed():
                self.sync_suite()
            latest = self.chain.w3.eth.get_block("latest")
            chain_head, head_ts = int(latest["number"]), int(latest["timestamp"])
            head = chain_head - self.confirmations
            cursors = self._cursors()
            if cursors and max(cursors.values()) - 1 > chain_head:
                log.warning("the chain is shorter than the index: it was reset; re-indexing")
                with self._transaction() as conn:
                    self._wipe(conn)
                self.sync_suite()
                cursors = self._cursors()
            stored = blocks = ranges = 0
            while cursors and (max_ranges is None or ranges < max_ranges):
                first = min(cursors.values())
                if first > head:
                    break
                group = [address for address, next_block in cursors.items() if next_block == first]
                later = [next_block for next_block in cursors.values() if next_block > first]
                last = min(head, first + self.batch_blocks - 1, *(n - 1 for n in later))
                logs, last = self._get_logs(group, first, last)
                found, rescan = self._store(logs, group, last)
                stored += found
                blocks += last - first + 1
                ranges += 1
                for address in group:
                    cursors[address] = last + 1
                if rescan:
                    # A Registry entry appeared: pick up the newly registered contract.
                    self.sync_suite()
                    cursors = self._cursors()
            indexed = min(cursors.values()) - 1 if cursors else head
            self._set_status(chain_head, head_ts, indexed)
            return PollResult(stored, blocks, indexed, chain_head)

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Poll until `stop` is set; errors (a node briefly away) are logged and retried on the next poll."""
        while not stop.is_set():
            try:
                result = self.poll()
                if result.events:
                    log.debug("indexed %d events up to block %d", result.events, result.indexed_block)
                self.last_error = None
            except Exception as exc:  # the loop must survive anything the node or the disk throws
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("explorer indexer: %s", self.last_error)
            stop.wait(interval_s)

    def _cursors(self) -> dict[str, int]:
        return {row["address"]: int(row["next_block"]) for row in self.conn.execute("SELECT * FROM contracts")}

    def _get_logs(self, addresses: Sequence[str], first: int, last: int) -> tuple[list[dict[str, Any]], int]:
        """Logs of `addresses` in [first, end] and `end`: `last`, or less when the node refused a large range."""
        while True:
            params = {"address": list(addresses), "fromBlock": hex(first), "toBlock": hex(last)}
            reply = self.chain.w3.provider.make_request("eth_getLogs", [params])  # type: ignore[arg-type]
            if "error" not in reply:
                return list(reply["result"] or []), last
            if last == first:
                raise ChainError(f"eth_getLogs failed for block {first}: {reply['error']}")
            last = first + (last - first) // 2

    def _store(self, logs: list[dict[str, Any]], addresses: Sequence[str], last: int) -> tuple[int, bool]:
        """Decode and insert `logs` and advance the cursors of `addresses` to `last + 1`, atomically."""
        names = {row["address"]: row["name"] for row in self.conn.execute("SELECT address, name FROM contracts")}
        rows: list[tuple[Any, ...]] = []
        accounts: list[tuple[str, str, int]] = []
        rescan = False
        for entry in logs:
            if entry.get("removed"):
                continue
            address = checksum(entry["address"])
            name = names.get(address)
            if name is None:
                continue
            decoded = self._decoder(name).decode(entry["topics"], entry["data"])
            block = int(entry["blockNumber"], 16)
            tx_hash = str(entry["transactionHash"]).lower()
            log_index = int(entry["logIndex"], 16)
            rows.append(
                (
                    block,
                    log_index,
                    tx_hash,
                    address,
                    name,
                    decoded.event,
                    decoded.refs[0],
                    decoded.refs[1],
                    json.dumps(decoded.args, separators=(",", ":")),
                    self._timestamp(entry, block),
                )
            )
            accounts.extend((account, tx_hash, log_index) for account in decoded.accounts)
            if name == "Registry" and decoded.event == "AddressSet":
                rescan = rescan or decoded.args.get("addr") not in names
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events"
                " (block, log_index, tx_hash, address, contract, event, ref, ref2, args, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            inserted = conn.total_changes - before
            conn.executemany(
                "INSERT OR IGNORE INTO event_accounts (account, event_id)"
                " SELECT ?, id FROM events WHERE tx_hash = ? AND log_index = ?",
                accounts,
            )
            conn.executemany(
                "UPDATE contracts SET next_block = ? WHERE address = ? AND next_block <= ?",
                [(last + 1, address, last + 1) for address in addresses],
            )
            if inserted:
                conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'event_count'", (inserted,)
                )
        return inserted, rescan

    def _decoder(self, name: str) -> EventDecoder:
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoders[name] = EventDecoder(compile_contract(name).abi)
        return decoder

    def _timestamp(self, entry: dict[str, Any], block: int) -> int:
        stamp = entry.get("blockTimestamp")
        if stamp is not None:
            return int(stamp, 16)
        # Older nodes do not put the block's time in its logs: ask once per block.
        if block not in self._timestamps:
            if len(self._timestamps) >= MAX_TIMESTAMP_CACHE:
                self._timestamps.clear()
            self._timestamps[block] = int(self.chain.w3.eth.get_block(block)["timestamp"])
        return self._timestamps[block]

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _set_status(self, head: int, head_ts: int, indexed: int) -> None:
        with self._transaction() as conn:
            self._set_meta(conn, "head_block", str(head))
            self._set_meta(conn, "head_ts", str(head_ts))
            self._set_meta(conn, "indexed_block", str(indexed))
            self._set_meta(conn, "polled_at", f"{time.time():.3f}")

    def _drop_contract(self, conn: sqlite3.Connection, address: str) -> None:
        conn.execute(
            "DELETE FROM event_accounts WHERE event_id IN (SELECT id FROM events WHERE address = ?)", (address,)
        )
        conn.execute("DELETE FROM events WHERE address = ?", (address,))
        conn.execute("DELETE FROM contracts WHERE address = ?", (address,))
        self._recount(conn)

    def _wipe(self, conn: sqlite3.Connection) -> None:
        for table in ("event_accounts", "events", "contracts"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM meta WHERE key != 'schema'")
        self._recount(conn)

    def _recount(self, conn: sqlite3.Connection) -> None:
        count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        self._set_meta(conn, "event_count", str(count))

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    """`with` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def event_names(names: Iterable[str]) -> dict[str, list[str]]:
    """Per contract name, the events its ABI declares (for the explorer's event filter)."""
    return {name: EventDecoder(compile_contract(name).abi).event_names for name in names}
