"""`HostPayouts`: what hosts earned from settled payments, kept on disk, passed on (with the subsidy) in batches.

Agents pay the HostRegistry; each settled payment is credited to the host that served its request, and a
worker thread periodically calls `HostRegistry.payHosts`, one transaction for every host owed, in which
the Treasury adds the subsidy. Batched settlement lands payments on chain later than they are credited,
so a payout waits until the registry holds enough paid-in USD to cover it.

Credits live in a SQLite file (`OwedStore`), so a gateway that crashes or restarts pays what an earlier run
owed. A payout is recorded as "sending" before its transaction and closed after it; one a crash left open
is reconciled at the next start from the registry's `HostPaid` events: paid once, never twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3.exceptions import Web3Exception

from covey.errors import CoveyError
from covey.gateway.metrics import GatewayMetrics
from covey.gateway.pricing import usd
from covey.gateway.registry import HostRegistryClient, Payout

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
MAX_HOSTS_PER_PAYOUT = 64  # the HostRegistry's MAX_PAYOUTS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    key TEXT PRIMARY KEY,       -- the payment's idempotency key: a payment is credited once
    host TEXT NOT NULL,
    amount INTEGER NOT NULL,
    payout INTEGER              -- NULL while owed; the payout sending it otherwise
);
CREATE INDEX IF NOT EXISTS credits_owed ON credits (payout, host);
CREATE TABLE IF NOT EXISTS payouts (
    id INTEGER PRIMARY KEY,
    from_block INTEGER NOT NULL -- the chain's height before the transaction: where to look for it
);
CREATE TABLE IF NOT EXISTS withheld (host TEXT PRIMARY KEY);
"""


@dataclass(frozen=True)
class PendingPayout:
    """A payout recorded before its transaction: what it pays, and from which block to look for it."""

    id: int
    from_block: int
    amounts: dict[str, int]


class OwedStore:
    """Credits owed to hosts and payouts under way, in SQLite at `path` (`None`: in memory), thread-safe.

    WAL with `synchronous=NORMAL`: a commit survives the process being killed; a power cut may lose the
    last few credits (the payment journal, which settles the agents' money, fsyncs every record).
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def credit(self, key: str, host: str, amount: int) -> bool:
        """Owe `host` `amount` for payment `key`; False if that payment was credited before or the host is withheld."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM withheld WHERE host = ?", (host,)).fetchone():
                return False
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO credits (key, host, amount) VALUES (?, ?, ?)", (key, host, amount)
            )
            return cursor.rowcount == 1

    def withhold(self, host: str) -> None:
        """Owe `host` nothing more: drop what it is owed and refuse its future credits."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO withheld (host) VALUES (?)", (host,))
            self._db.execute("DELETE FROM credits WHERE host = ? AND payout IS NULL", (host,))
            self._db.execute("COMMIT")

    def owed(self) -> dict[str, int]:
        """Host -> amount owed and not yet in a payout."""
        with self._lock:
            rows = self._db.execute(
                "SELECT host, SUM(amount) FROM credits WHERE payout IS NULL GROUP BY host"
            ).fetchall()
        return {host: int(total) for host, total in rows if total > 0}

    def claim(self, available: int, from_block: int, *, max_hosts: int = MAX_HOSTS_PER_PAYOUT) -> PendingPayout | None:
        """Record a payout of what the smallest creditors are owed, within `available`, before sending it.

        Hosts are taken smallest debt first while the registry's `available` balance covers them (at most
        `max_hosts`); `None` if none fits. Credits arriving later stay owed for the next payout.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT host, SUM(amount) AS total FROM credits WHERE payout IS NULL GROUP BY host ORDER BY total"
            ).fetchall()
            amounts: dict[str, int] = {}
            for host, total in rows:
                if len(amounts) == max_hosts or total > available:
                    break
                if total > 0:
                    amounts[host] = int(total)
                    available -= total
            if not amounts:
                self._db.execute("ROLLBACK")
                return None
            cursor = self._db.execute("INSERT INTO payouts (from_block) VALUES (?)", (from_block,))
            payout_id = int(cursor.lastrowid or 0)
            self._db.executemany(
                "UPDATE credits SET payout = ? WHERE host = ? AND payout IS NULL", [(payout_id, h) for h in amounts]
            )
            self._db.execute("COMMIT")
        return PendingPayout(payout_id, from_block, amounts)

    def finish(self, payout_id: int) -> None:
        """The payout's transaction is mined: its credits are paid and forgotten."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM credits WHERE payout = ?", (payout_id,))
            self._db.execute("DELETE FROM payouts WHERE id = ?", (payout_id,))
            self._db.execute("COMMIT")

    def abort(self, payout_id: int) -> None:
        """The payout's transaction did not happen: its credits are owed again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE credits SET payout = NULL WHERE payout = ?", (payout_id,))
            self._db.execute("DELETE FROM payouts WHERE id = ?", (payout_id,))
            self._db.execute("COMMIT")

    def pending(self) -> list[PendingPayout]:
        """Payouts recorded as sending whose outcome is not known (a crash or a lost connection)."""
        with self._lock:
            payouts = self._db.execute("SELECT id, from_block FROM payouts ORDER BY id").fetchall()
            result = []
            for payout_id, from_block in payouts:
                rows = self._db.execute(
                    "SELECT host, SUM(amount) FROM credits WHERE payout = ? GROUP BY host", (payout_id,)
                ).fetchall()
                result.append(PendingPayout(int(payout_id), int(from_block), {h: int(a) for h, a in rows}))
        return result

    def close(self) -> None:
        with self._lock:
            self._db.close()


class HostPayouts:
    """Accrues earnings per host in an `OwedStore` (thread-safe) and pays them out through the HostRegistry.

    `state_path` is the store's SQLite file; without one, credits live in memory and die with the process.
    """

    def __init__(
        self,
        registry: HostRegistryClient,
        account: LocalAccount,
        metrics: GatewayMetrics | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        state_path: Path | None = None,
    ) -> None:
        self.registry = registry
        self.account = account
        self.metrics = metrics
        self.interval_s = interval_s
        self.store = OwedStore(state_path)
        self.paid: list[Payout] = []
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def credit(self, host: str, amount_atomic: int, key: str) -> None:
        """`host` earned `amount_atomic` for the settled payment `key` (credited once per payment)."""
        self.store.credit(key, host, amount_atomic)

    def withhold(self, host: str) -> None:
        """Pay `host` nothing more (it was caught serving a different model); what it was owed stays in."""
        self.store.withhold(host)

    def owed(self) -> dict[str, int]:
        """Host -> amount owed and not yet being paid."""
        return self.store.owed()

    def flush(self) -> list[Payout]:
        """Pay what is owed and covered by the registry's paid-in balance (blocking; one transaction)."""
        with self._flush_lock:
            self._reconcile()
            if not self.store.owed():
                return []
            from_block = self.registry.chain.block_number()
            payout = self.store.claim(self.registry.usd_balance(), from_block)
            if payout is None:
                return []
            try:
                payouts = self.registry.pay_hosts(self.account, payout.amounts)
            except CoveyError:
                self._settle_pending(payout)  # it may have been mined before the error: look before retrying
                raise
            self.store.finish(payout.id)
            self._paid(payouts)
            return payouts

    def _reconcile(self) -> None:
        """Close payouts an earlier run (or a failed call) left open: paid if the chain has them, else owed."""
        for payout in self.store.pending():
            self._settle_pending(payout)

    def _settle_pending(self, payout: PendingPayout) -> None:
        mined = self._find_on_chain(payout)
        if mined is None:
            log.info(
                "host payout %d never reached the chain: its %d hosts are owed again", payout.id, len(payout.amounts)
            )
            self.store.abort(payout.id)
        else:
            log.info("host payout %d was mined before the gateway stopped: recorded as paid", payout.id)
            self.store.finish(payout.id)
            self._paid(mined)

    def _find_on_chain(self, payout: PendingPayout) -> list[Payout] | None:
        """The `HostPaid` events of one transaction by this gateway paying exactly `payout`, if mined."""
        by_tx: dict[str, list[Payout]] = {}
        for event in self.registry.events("HostPaid", from_block=payout.from_block, with_tx=True):
            if str(event["gateway"]).lower() == self.account.address.lower():
                by_tx.setdefault(event["transaction"], []).append(
                    Payout(str(event["host"]), int(event["amount"]), int(event["subsidy"]))
                )
        for payouts in by_tx.values():
            if {p.host: p.amount for p in payouts} == payout.amounts:
                return payouts
        return None

    def _paid(self, payouts: list[Payout]) -> None:
        self.paid.extend(payouts)
        if self.metrics is not None:
            for payout in payouts:
                self.metrics.host_payouts.inc(usd(payout.amount))
                self.metrics.subsidy.inc(usd(payout.subsidy))

    # -- the worker -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="covey-host-payouts", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        # The first round runs at once: what an earlier run owed is paid as soon as the gateway is back.
        self._flush_logged()
        while not self._stop.wait(self.interval_s):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except (CoveyError, OSError, Web3Exception) as exc:  # the chain is down or refused: retried next round
            log.warning("host payouts failed, will retry: %s", exc)

    async def close(self, *, final_flush: bool = True) -> None:
        """Stop the worker, then pay what is owed and covered one last time; close the store."""
        self._stop.set()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, self.interval_s + 30)
        if final_flush:
            await asyncio.to_thread(self._flush_logged)
        self.store.close()
