"""The event indexer: every log of every suite contract, decoded into SQLite, resuming where it stopped.

`Indexer.poll()` asks the chain for logs in block ranges (`eth_getLogs`, one call for all contracts whose
cursor is at the same block), decodes them with each contract's ABI and stores them with their cursor
advance in one transaction, so a crash or restart neither loses nor repeats an event; the unique key
(tx hash, log index) makes a repeated range harmless anyway. The suite comes from the deployment
manifest plus the on-chain Registry (`covey.explorer.suite`); a redeployed suite drops the old contracts'
rows, and a restarted chain (new genesis) empties the index (`covey.explorer.index_db`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covey.chain import Chain, compile_contract
from covey.chain.deploy import manifest_path
from covey.errors import ChainError
from covey.explorer.decoding import EventDecoder, checksum
from covey.explorer.index_db import (
    drop_contract,
    index_path,
    open_index,
    read_meta,
    set_meta,
    transaction,
    wipe,
)
from covey.explorer.suite import Watched, discover_suite

log = logging.getLogger("covey.explorer.indexer")

DEFAULT_BATCH_BLOCKS = 2_000
RESYNC_INTERVAL_S = 30.0  # re-check the manifest, Registry and genesis even when the manifest file is unchanged
MAX_TIMESTAMP_CACHE = 4_096

__all__ = ["Indexer", "PollResult", "index_path"]


@dataclass(frozen=True)
class PollResult:
    """What one poll did: events stored (new ones only), blocks covered and the indexed head."""

    events: int
    blocks: int
    indexed_block: int
    head_block: int


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
        with transaction(self.conn) as conn:
            if read_meta(conn, "chain") != identity:
                wipe(conn)
                set_meta(conn, "chain", identity)
            set_meta(conn, "chain_id", str(self.chain.chain_id))
            known = {row["address"]: row for row in conn.execute("SELECT * FROM contracts")}
            wanted: dict[str, Watched | None] = (
                {w.address: w for w in watched} if watched is not None else dict.fromkeys(known)
            )
            for address in set(known) - set(wanted):
                drop_contract(conn, address)
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
            set_meta(conn, "suite_error", self.suite_error or "")
            set_meta(conn, "suite_synced_at", str(int(time.time())))
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
                with transaction(self.conn) as conn:
                    wipe(conn)
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
        with transaction(self.conn) as conn:
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

    def _set_status(self, head: int, head_ts: int, indexed: int) -> None:
        with transaction(self.conn) as conn:
            set_meta(conn, "head_block", str(head))
            set_meta(conn, "head_ts", str(head_ts))
            set_meta(conn, "indexed_block", str(indexed))
            set_meta(conn, "polled_at", f"{time.time():.3f}")
