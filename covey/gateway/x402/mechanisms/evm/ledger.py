"""`BalanceLedger`: payers' token balances as last read from the chain, kept current by what we settle.

Batched settlement verifies payments off chain; reading `balanceOf` for every request would cost more than
answering it. The ledger reads a payer's balance at most once per `ttl_s` and, between reads, subtracts the
payments this facilitator itself settles. The facilitator counts the payments it holds (journaled, not yet
settled) against the ledger's balance, so a payer cannot spend the same money twice here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BALANCE_TTL_S = 10.0
# A `fresh` read younger than this is answered from the cache: a broke payer retrying cannot make every one of
# its refused requests cost a chain read.
DEFAULT_MIN_FRESH_INTERVAL_S = 0.5
# A read that a settlement overlapped is taken again, at most this many times.
MAX_READ_ATTEMPTS = 3
# Past this many payers, expired readings are dropped so a long-running gateway's memory stays bounded.
MAX_PAYERS = 100_000


@dataclass
class _Reading:
    balance: int
    read_done_at: float  # monotonic time the read returned: any transaction sent later cannot be in it


class BalanceLedger:
    """Per (token, payer) balances read through `read(token, payer)`, thread-safe.

    A reading returned before a settlement's transaction was sent cannot include that transfer, so the
    settled amount is subtracted from it; a reading that returned after the transaction was sent may or may
    not include it, so it is dropped and read again when next needed. A read that a settlement overlapped
    is not kept at all. Money the payer moves elsewhere is seen at the next read (within `ttl_s`); the
    batch settlement catches the rest, the risk window batched settlement accepts anyway.
    """

    def __init__(
        self,
        read: Callable[[str, str], int],
        *,
        ttl_s: float = DEFAULT_BALANCE_TTL_S,
        min_fresh_interval_s: float = DEFAULT_MIN_FRESH_INTERVAL_S,
    ) -> None:
        self._read = read
        self.ttl_s = ttl_s
        self.min_fresh_interval_s = min_fresh_interval_s
        self._lock = threading.Lock()
        self._readings: dict[tuple[str, str], _Reading] = {}
        self._versions: dict[tuple[str, str], int] = {}  # bumped by every settlement of the payer

    def balance(self, token: str, payer: str, *, fresh: bool = False) -> int:
        """The payer's balance: cached if younger than `ttl_s`, else read from the chain.

        `fresh` asks for a new read (before refusing a payment), unless the cached one is only a moment old.
        """
        key = (token.lower(), payer.lower())
        max_age_s = self.min_fresh_interval_s if fresh else self.ttl_s
        with self._lock:
            reading = self._readings.get(key)
            if reading is not None and time.monotonic() - reading.read_done_at < max_age_s:
                return reading.balance
        for _attempt in range(MAX_READ_ATTEMPTS):
            with self._lock:
                version = self._versions.get(key, 0)
            balance = self._read(token, payer)
            with self._lock:
                if self._versions.get(key, 0) == version:
                    self._readings[key] = _Reading(balance, time.monotonic())
                    if len(self._readings) > MAX_PAYERS:
                        self._prune()
                    return balance
        return balance  # settlements keep landing for this payer: use the latest read uncached

    def settled(self, token: str, payer: str, amount: int, *, sent_at: float) -> None:
        """`amount` left the payer in a transaction sent at monotonic time `sent_at` (and now mined)."""
        key = (token.lower(), payer.lower())
        with self._lock:
            self._versions[key] = self._versions.get(key, 0) + 1
            reading = self._readings.get(key)
            if reading is None:
                return
            if reading.read_done_at < sent_at:
                reading.balance -= amount
            else:
                del self._readings[key]

    def forget(self, token: str, payer: str) -> None:
        """Read this payer's balance again next time (a settlement failed: its balance may have moved)."""
        key = (token.lower(), payer.lower())
        with self._lock:
            self._versions[key] = self._versions.get(key, 0) + 1
            self._readings.pop(key, None)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, r in self._readings.items() if now - r.read_done_at >= self.ttl_s]:
            del self._readings[key]
        # A read in flight for a dropped version sees a mismatch and reads again: harmless.
        self._versions = {k: v for k, v in self._versions.items() if k in self._readings}
