"""The x402 protocol v2 messages as pydantic models, with the spec's camelCase field names on the wire."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

X402_VERSION = 2


class X402Model(BaseModel):
    """Base of every message: snake_case in Python, camelCase in JSON, unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object the spec describes: camelCase names, optional fields left out when unset."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ResourceInfo(X402Model):
    """The protected resource a payment is for."""

    url: str
    description: str | None = None
    mime_type: str | None = None


class PaymentRequirements(X402Model):
    """One way to pay for a resource: scheme, network, exact amount in atomic units, asset, payee."""

    scheme: str
    network: str
    amount: str
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any] | None = None


class PaymentRequired(X402Model):
    """The 402 answer: what the resource costs and how it may be paid."""

    x402_version: int = X402_VERSION
    error: str | None = None
    resource: ResourceInfo
    accepts: list[PaymentRequirements]
    extensions: dict[str, Any] | None = None


class PaymentPayload(X402Model):
    """A client's payment: the requirements it chose (`accepted`) and the scheme's signed `payload`."""

    x402_version: int
    resource: ResourceInfo | None = None
    accepted: PaymentRequirements
    payload: dict[str, Any]
    extensions: dict[str, Any] | None = None


class VerifyRequest(X402Model):
    """Body of `POST /verify`."""

    x402_version: int = X402_VERSION
    payment_payload: PaymentPayload
    payment_requirements: PaymentRequirements


class SettleRequest(VerifyRequest):
    """Body of `POST /settle` (the same shape as `/verify`)."""


class VerifyResponse(X402Model):
    """Whether a payment would settle; `invalid_reason` says why not."""

    is_valid: bool
    invalid_reason: str | None = None
    # Not in the spec's table but sent by the reference SDKs: a human-readable detail for the reason.
    invalid_message: str | None = None
    payer: str | None = None


class SettleResponse(X402Model):
    """The outcome of settlement; also the `PAYMENT-RESPONSE` header's content.

    `transaction` is empty when settlement failed, and also when a batched gateway accepted the payment
    but has not put it on chain yet (find it later by the token's `AuthorizationUsed(payer, nonce)`).
    """

    success: bool
    error_reason: str | None = None
    error_message: str | None = None
    payer: str | None = None
    transaction: str = ""
    network: str
    amount: str | None = None
    extensions: dict[str, Any] | None = None


class SupportedKind(X402Model):
    """One (version, scheme, network) a facilitator can verify and settle."""

    x402_version: int = X402_VERSION
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(X402Model):
    """Body of `GET /supported`."""

    kinds: list[SupportedKind]
    extensions: list[str] = Field(default_factory=list)
    signers: dict[str, list[str]] = Field(default_factory=dict)
