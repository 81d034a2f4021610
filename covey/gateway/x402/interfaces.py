"""The roles of the x402 layer as `typing.Protocol`s: facilitators, scheme servers, settlement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from covey.gateway.x402.types import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)


class FacilitatorClient(Protocol):
    """Anything that verifies and settles payments: an in-process facilitator or a remote one over HTTP."""

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Check the payment without moving money; an invalid one answers `is_valid=False` with a reason."""
        ...

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Put the payment on chain, at most once per authorisation; failures answer `success=False`."""
        ...

    async def supported(self) -> SupportedResponse:
        """The (scheme, network) kinds and signer addresses this facilitator handles."""
        ...


class Facilitator(Protocol):
    """A facilitator's logic as plain blocking calls (chain I/O inside); clients run it off the event loop."""

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse: ...

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse: ...

    def supported(self) -> SupportedResponse: ...


@dataclass(frozen=True)
class PaymentFacts:
    """What a resource server reads from a payment before asking the facilitator about it."""

    key: str
    """The idempotency key: the scheme's one-time identity of this payment (payer and nonce for EIP-3009)."""
    payer: str
    expires_at: int
    """Unix time after which the payment can no longer settle."""


class SchemeServer(Protocol):
    """The resource server's side of one scheme on one network: it prices and shape-checks payments."""

    scheme: str
    network: str

    def requirements(self, amount_atomic: int) -> PaymentRequirements:
        """The requirements to charge `amount_atomic` units of this server's asset."""
        ...

    def check_payload(self, payload: dict[str, Any]) -> PaymentFacts:
        """Check the scheme payload's shape (raise `MalformedPaymentError` if wrong) and read its facts."""
        ...


class BatchSettler(Protocol):
    """A facilitator that can hold accepted payments and later settle many in one transaction (sync API)."""

    def reserve(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, min_validity_s: int
    ) -> VerifyResponse:
        """Atomically re-check a verified payment and hold it as owed: its nonce and amount count as in flight."""
        ...

    def restore(self, payload: PaymentPayload, requirements: PaymentRequirements) -> None:
        """Hold a payment accepted before a restart (from the journal) without re-checking it."""
        ...

    def release(self, payload: PaymentPayload) -> None:
        """Drop a hold without settling (the request it paid for failed)."""
        ...

    def settle_batch(self, items: Sequence[tuple[PaymentPayload, PaymentRequirements]]) -> list[SettleResponse | None]:
        """Settle held payments, one result per item; `None` means "not settled yet, try again later"."""
        ...

    def nonce_used(self, payload: PaymentPayload, requirements: PaymentRequirements) -> bool:
        """Whether the chain has already used this payment's one-time authorisation (one chain read)."""
        ...


@dataclass(frozen=True)
class VerifiedPayment:
    """A payment the facilitator accepted for one request, ready to settle after the request is served."""

    payload: PaymentPayload
    requirements: PaymentRequirements
    payer: str
    key: str
    expires_at: int | None = None
    """Unix time after which the payment can no longer settle (`PaymentFacts.expires_at`); `None` if unknown."""


class Settlement(Protocol):
    """When accepted payments reach the chain: strictly before answering, or batched after journaling."""

    mode: str
    min_validity_s: int
    """How long an authorisation must stay valid to be accepted: settlement has to land inside it."""

    async def check(self, payment: VerifiedPayment) -> str | None:
        """Before serving: a reason code if this verified payment must not be served (already spent), else None."""
        ...

    async def settle(self, payment: VerifiedPayment) -> SettleResponse:
        """Make the payment final enough to answer the request (on chain, or durably journaled)."""
        ...

    async def start(self) -> None:
        """Begin background work (recovery, batch flushing); a no-op for strict settlement."""
        ...

    async def close(self) -> None:
        """Stop background work, settling what is pending when possible."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters for health pages and tests: pending, settled, failed."""
        ...
