"""`HostPayouts`: what hosts earned from settled payments, passed on (with the subsidy) in batches.

Agents pay the HostRegistry; each settled payment is credited to the host that served its request, and a
worker thread periodically calls `HostRegistry.payHosts`, one transaction for every host owed, in which
the Treasury adds the subsidy. Batched settlement lands payments on chain later than they are credited,
so a payout waits until the registry holds enough paid-in USD to cover it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict

from eth_account.signers.local import LocalAccount

from covey.errors import CoveyError
from covey.gateway.metrics import GatewayMetrics
from covey.gateway.pricing import usd
from covey.gateway.registry import HostRegistryClient, Payout

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
MAX_HOSTS_PER_PAYOUT = 64  # the HostRegistry's MAX_PAYOUTS


class HostPayouts:
    """Accrues earnings per host (thread-safe) and pays them out through the HostRegistry."""

    def __init__(
        self,
        registry: HostRegistryClient,
        account: LocalAccount,
        metrics: GatewayMetrics | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.registry = registry
        self.account = account
        self.metrics = metrics
        self.interval_s = interval_s
        self.paid: list[Payout] = []
        self._owed: dict[str, int] = defaultdict(int)
        self._withheld: set[str] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    def credit(self, host: str, amount_atomic: int) -> None:
        """`host` earned `amount_atomic` (a settled payment for a request it served)."""
        with self._lock:
            if host not in self._withheld:
                self._owed[host] += amount_atomic

    def withhold(self, host: str) -> None:
        """Pay `host` nothing more (it was caught serving a different model); what it was owed stays in."""
        with self._lock:
            self._withheld.add(host)
            self._owed.pop(host, None)

    def owed(self) -> dict[str, int]:
        with self._lock:
            return {host: amount for host, amount in self._owed.items() if amount > 0}

    def flush(self) -> list[Payout]:
        """Pay what is owed and covered by the registry's paid-in balance (blocking; one transaction)."""
        with self._flush_lock:
            owed = self.owed()
            if not owed:
                return []
            available = self.registry.usd_balance()
            batch: dict[str, int] = {}
            for host, amount in sorted(owed.items(), key=lambda item: item[1]):
                if len(batch) == MAX_HOSTS_PER_PAYOUT or amount > available:
                    break
                batch[host] = amount
                available -= amount
            if not batch:
                return []
            payouts = self.registry.pay_hosts(self.account, batch)
            with self._lock:
                for host, amount in batch.items():
                    self._owed[host] -= amount
                    if self._owed[host] <= 0:
                        del self._owed[host]
                self.paid.extend(payouts)
            if self.metrics is not None:
                for payout in payouts:
                    self.metrics.host_payouts.inc(usd(payout.amount))
                    self.metrics.subsidy.inc(usd(payout.subsidy))
            return payouts

    # -- the worker -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="covey-host-payouts", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except CoveyError as exc:  # the chain is down or the registry refused: retried next round
            log.warning("host payouts failed, will retry: %s", exc)

    async def close(self, *, final_flush: bool = True) -> None:
        """Stop the worker, then pay what is owed and covered one last time."""
        self._stop.set()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, self.interval_s + 30)
        if final_flush:
            await asyncio.to_thread(self._flush_logged)
