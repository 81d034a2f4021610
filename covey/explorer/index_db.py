"""The explorer's index file: its SQLite schema, where it lives, and the small writes the indexer shares.

One writer (the indexer) and many readers (the web app's threads, each with its own connection): WAL mode
lets readers never block the writer, and every write is one `transaction` (BEGIN IMMEDIATE ... COMMIT).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from covey.config import Settings, get_settings
from covey.errors import ChainError

INDEX_DIR = "explorer"
INDEX_FILE = "index.sqlite"
SCHEMA_VERSION = 1

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


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """The index's `meta` value at `key`, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )


def drop_contract(conn: sqlite3.Connection, address: str) -> None:
    """Forget a contract and every event it emitted."""
    conn.execute("DELETE FROM event_accounts WHERE event_id IN (SELECT id FROM events WHERE address = ?)", (address,))
    conn.execute("DELETE FROM events WHERE address = ?", (address,))
    conn.execute("DELETE FROM contracts WHERE address = ?", (address,))
    recount(conn)


def wipe(conn: sqlite3.Connection) -> None:
    """Empty the index (a new chain), keeping its schema version."""
    for table in ("event_accounts", "events", "contracts"):
        conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM meta WHERE key != 'schema'")
    recount(conn)


def recount(conn: sqlite3.Connection) -> None:
    count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    set_meta(conn, "event_count", str(count))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`with` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
