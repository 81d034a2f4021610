"""The `exact` scheme's resource-server side on an EVM chain: price a route in a token, shape-check payments."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from web3 import Web3

from covey.chain import Chain
from covey.gateway.x402.errors import MalformedPaymentError
from covey.gateway.x402.interfaces import PaymentFacts
from covey.gateway.x402.mechanisms.evm.eip3009 import Authorization, read_domain, split_signature, token_contract
from covey.gateway.x402.types import PaymentRequirements

SCHEME = "exact"
# The client signs validBefore = now + maxTimeoutSeconds, and the token judges it by block time, which may
# lag or lead wall time: ten minutes leaves room for clock skew and for batched settlement.
DEFAULT_MAX_TIMEOUT_S = 600


class ExactEvmServer:
    """Builds `exact` requirements for one EIP-3009 token and payee on one chain.

    The token is asked once for its EIP-712 domain, so `extra.name` / `extra.version` are exactly what its
    `transferWithAuthorization` checks signatures against.
    """

    scheme = SCHEME

    def __init__(self, chain: Chain, asset: str, pay_to: str, *, max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S) -> None:
        self.network = f"eip155:{chain.chain_id}"
        self.asset = Web3.to_checksum_address(asset)
        self.pay_to = Web3.to_checksum_address(pay_to)
        self.max_timeout_s = max_timeout_s
        domain = read_domain(chain, self.asset)
        self.extra: dict[str, Any] = {"name": domain.name, "version": domain.version}
        self.decimals = int(token_contract(chain, self.asset).functions.decimals().call())

    def requirements(self, amount_atomic: int) -> PaymentRequirements:
        """Ask for exactly `amount_atomic` units of the token, paid to this server's payee."""
        if amount_atomic <= 0:
            raise ValueError(f"a price must be positive, not {amount_atomic}")
        return PaymentRequirements(
            scheme=SCHEME,
            network=self.network,
            amount=str(amount_atomic),
            asset=self.asset,
            pay_to=self.pay_to,
            max_timeout_seconds=self.max_timeout_s,
            extra=dict(self.extra),
        )

    def atomic_amount(self, price: Decimal | str) -> int:
        """A price in whole tokens (e.g. USD for a USD token) in atomic units, rounded up."""
        scaled = Decimal(price) * (Decimal(10) ** self.decimals)
        return int(scaled.to_integral_value(rounding=ROUND_CEILING))

    def check_payload(self, payload: dict[str, Any]) -> PaymentFacts:
        """Check the `exact` EVM payload's shape; its key is (payer, nonce), which the token allows once."""
        try:
            auth = Authorization.from_wire(payload.get("authorization"))
            split_signature(payload.get("signature"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise MalformedPaymentError(f"malformed exact EVM payload: {exc}") from exc
        return PaymentFacts(key=auth.key, payer=auth.payer, expires_at=auth.valid_before)
