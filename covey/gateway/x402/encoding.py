"""The HTTP transport's header codec: x402 messages as base64 (RFC 4648, padded) compact JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TypeVar

from pydantic import ValidationError

from covey.bounds import UntrustedInputError, loads_json
from covey.gateway.x402.errors import MalformedPaymentError
from covey.gateway.x402.types import PaymentPayload, PaymentRequired, SettleResponse, X402Model

PAYMENT_REQUIRED_HEADER = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE_HEADER = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE_HEADER = "PAYMENT-RESPONSE"

# A real payment header is ~1.5 KB; anything far larger is abuse, not a payment.
MAX_HEADER_CHARS = 16_384

ModelT = TypeVar("ModelT", bound=X402Model)


def encode_header(message: X402Model) -> str:
    """Base64 of the message's compact wire JSON, as every x402 header carries it."""
    text = json.dumps(message.to_wire(), separators=(",", ":"))
    return base64.b64encode(text.encode()).decode("ascii")


def decode_header(value: str, model: type[ModelT]) -> ModelT:
    """Parse a base64 JSON header into `model`; anything else raises `MalformedPaymentError`."""
    value = value.strip()
    if not value:
        raise MalformedPaymentError("empty x402 header")
    if len(value) > MAX_HEADER_CHARS:
        raise MalformedPaymentError(f"x402 header is {len(value)} characters, above the {MAX_HEADER_CHARS} limit")
    try:
        raw = _b64decode(value)
    except (binascii.Error, ValueError) as exc:
        raise MalformedPaymentError(f"x402 header is not base64-encoded JSON: {exc}") from exc
    try:
        data = loads_json(raw, max_bytes=MAX_HEADER_CHARS, what="x402 header")
    except UntrustedInputError as exc:
        raise MalformedPaymentError(str(exc)) from exc
    if not isinstance(data, dict):
        raise MalformedPaymentError("x402 header must decode to a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise MalformedPaymentError(f"x402 header is not a valid {model.__name__}: {where}: {first['msg']}") from exc


def _b64decode(value: str) -> bytes:
    # The spec says base64; accept the URL-safe alphabet and missing padding too, as lenient servers do.
    padded = value + "=" * (-len(value) % 4)
    if "-" in value or "_" in value:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    return base64.b64decode(padded.encode("ascii"), validate=True)


def decode_payment_payload(value: str) -> PaymentPayload:
    """The `PAYMENT-SIGNATURE` header's payment."""
    return decode_header(value, PaymentPayload)


def decode_payment_required(value: str) -> PaymentRequired:
    """The `PAYMENT-REQUIRED` header's requirements."""
    return decode_header(value, PaymentRequired)


def decode_payment_response(value: str) -> SettleResponse:
    """The `PAYMENT-RESPONSE` header's settlement result."""
    return decode_header(value, SettleResponse)
