"""Test scaffolding: the x402 `exact` scheme's client side on an EVM chain, signing EIP-3009 authorisations.

Agents (and the demo) pay with the official x402 SDK; the tests and the gateway bench use this client because
it can also build payments a well-behaved client never would, and sign them without a round trip.
"""

from __future__ import annotations

import os
import time

from eth_account.signers.local import LocalAccount

from covey.gateway.x402.mechanisms.evm.eip3009 import Authorization, sign_authorization
from covey.gateway.x402.types import X402_VERSION, PaymentPayload, PaymentRequirements, ResourceInfo

# Like the reference client: valid from ten minutes ago, so a chain clock behind wall time still accepts it.
VALID_AFTER_SKEW_S = 600


class ExactEvmClient:
    """Pays `exact` EVM requirements from a local account, as the official x402 client does.

    The keyword overrides of `pay` exist for agents with special needs and for tests that must build
    payments a well-behaved client never would (wrong amount, expired, reused nonce, ...).
    """

    def __init__(self, account: LocalAccount) -> None:
        self.account = account

    def pay(
        self,
        requirements: PaymentRequirements,
        *,
        resource: ResourceInfo | None = None,
        value: int | None = None,
        pay_to: str | None = None,
        valid_after: int | None = None,
        valid_before: int | None = None,
        nonce: bytes | None = None,
        domain_name: str | None = None,
        chain_id: int | None = None,
    ) -> PaymentPayload:
        """A signed payment for `requirements`, echoing them in `accepted` unchanged."""
        now = int(time.time())
        auth = Authorization(
            payer=self.account.address,
            payee=pay_to or requirements.pay_to,
            value=int(requirements.amount) if value is None else value,
            valid_after=now - VALID_AFTER_SKEW_S if valid_after is None else valid_after,
            valid_before=now + requirements.max_timeout_seconds if valid_before is None else valid_before,
            nonce=os.urandom(32) if nonce is None else nonce,
        )
        extra = requirements.extra or {}
        domain = {
            "name": domain_name or extra.get("name", ""),
            "version": extra.get("version", ""),
            "chainId": chain_id or int(requirements.network.split(":", 1)[1]),
            "verifyingContract": requirements.asset,
        }
        return PaymentPayload(
            x402_version=X402_VERSION,
            resource=resource,
            accepted=requirements,
            payload={"signature": sign_authorization(self.account, domain, auth), "authorization": auth.to_wire()},
        )
