"""Every x402 failure in one place: the spec's reason codes and the exceptions the gateway raises."""

from __future__ import annotations

from enum import StrEnum

from covey.errors import PaymentError


class Reason(StrEnum):
    """Reason codes for `invalidReason` / `errorReason`.

    The x402 v2 specification (section 9) names most of them; the rest follow the reference SDK's
    names for the `exact` EVM scheme, so clients that switch on a code see the one they know.
    """

    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_SIGNATURE = "invalid_exact_evm_payload_signature"
    VALID_AFTER = "invalid_exact_evm_payload_authorization_valid_after"
    VALID_BEFORE = "invalid_exact_evm_payload_authorization_valid_before"
    VALUE_MISMATCH = "invalid_exact_evm_payload_authorization_value_mismatch"
    RECIPIENT_MISMATCH = "invalid_exact_evm_payload_recipient_mismatch"
    # Not in the spec's list: the SDK's code for a nonce the token already consumed (or that is in flight).
    NONCE_ALREADY_USED = "invalid_exact_evm_nonce_already_used"
    # Not in the spec's list: named like the spec's other exact-scheme codes (and the Aptos scheme's).
    ASSET_MISMATCH = "invalid_exact_evm_payload_asset_mismatch"
    MISSING_EIP712_DOMAIN = "missing_eip712_domain"
    INVALID_NETWORK = "invalid_network"
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_PAYMENT_REQUIREMENTS = "invalid_payment_requirements"
    INVALID_SCHEME = "invalid_scheme"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    INVALID_X402_VERSION = "invalid_x402_version"
    INVALID_TRANSACTION_STATE = "invalid_transaction_state"
    UNEXPECTED_VERIFY_ERROR = "unexpected_verify_error"
    UNEXPECTED_SETTLE_ERROR = "unexpected_settle_error"


class X402Error(PaymentError):
    """Base of every x402 failure; HTTP maps it to 402 unless a subclass says otherwise."""


class MalformedPaymentError(X402Error):
    """A payment header or request body cannot be decoded into the x402 schema (HTTP 400)."""

    http_status = 400


class PaymentRejectedError(X402Error):
    """A well-formed payment is not acceptable; `reason` is one of `Reason`."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class FacilitatorUnavailableError(X402Error):
    """The facilitator could not be reached or answered outside the protocol (HTTP 502)."""

    http_status = 502


class JournalError(X402Error):
    """The settlement journal cannot be opened, read or made durable (HTTP 500)."""

    http_status = 500


class JournalBusyError(JournalError):
    """Another process holds the settlement journal; two writers would settle payments twice."""

    http_status = 503
