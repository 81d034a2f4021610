"""Off-chain verification for batched settlement: no chain read per payment on the request path.

`ExactEvmFacilitator` asks the chain about every payment (an `eth_call` simulating the transfer, or the
nonce and the balance), which costs more than generating a short answer. With batched settlement the
payment is settled later anyway, so `CachedBalanceFacilitator` checks everything a request needs off chain:
signature, amount, asset, network, payee and validity window as before; the nonce against the payments
this facilitator has seen (held, settling, settled); and the balance from a per-payer cache, read at most
once per `balance_ttl_s` and again after each batch of the payer's settles, with held amounts counted
against it as before.

What it gives up: a nonce the payer spent elsewhere is caught only by the batch (the batcher skips the
transfer; that authorisation already paid the same payee), and funds the payer moves away within the
cache's lifetime are caught only by the batch: the same risk window batched settlement already accepts
between answering and settling, a little longer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from eth_account.signers.local import LocalAccount

from covey.chain import Chain
from covey.gateway.x402.mechanisms.evm.exact.facilitator import ExactEvmFacilitator, _Payment
from covey.gateway.x402.types import PaymentPayload, PaymentRequirements, SettleResponse

DEFAULT_BALANCE_TTL_S = 2.0


class CachedBalanceFacilitator(ExactEvmFacilitator):
    """An `ExactEvmFacilitator` whose `verify` and `reserve` read balances from a short-lived cache."""

    def __init__(
        self, chain: Chain, signer: LocalAccount, *, balance_ttl_s: float = DEFAULT_BALANCE_TTL_S, **kwargs: Any
    ) -> None:
        super().__init__(chain, signer, simulate=False, **kwargs)
        self.balance_ttl_s = balance_ttl_s
        self._balances: dict[tuple[str, str], tuple[float, int]] = {}
        self._balances_lock = threading.Lock()

    def _check_nonce_and_funds(self, payment: _Payment, *, owed: int) -> None:
        """No chain read for the nonce (see the module docstring); the balance comes from the cache."""
        self._check_funds(payment, owed=owed)

    def _balance(self, payment: _Payment) -> int:
        key = (payment.token.lower(), payment.auth.payer.lower())
        with self._balances_lock:
            cached = self._balances.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.balance_ttl_s:
            return cached[1]
        balance = super()._balance(payment)
        with self._balances_lock:
            self._balances[key] = (time.monotonic(), balance)
        return balance

    def _forget_balances(self, payloads: Sequence[PaymentPayload]) -> None:
        """Settled payments moved money: the payers' balances must be read again."""
        with self._balances_lock:
            for payload in payloads:
                authorization = payload.payload.get("authorization") or {}
                payer = str(authorization.get("from", "")).lower()
                for key in [k for k in self._balances if k[1] == payer]:
                    del self._balances[key]

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        try:
            return super().settle(payload, requirements)
        finally:
            self._forget_balances([payload])

    def settle_batch(self, items: Sequence[tuple[PaymentPayload, PaymentRequirements]]) -> list[SettleResponse | None]:
        try:
            return super().settle_batch(items)
        finally:
            self._forget_balances([payload for payload, _requirements in items])
