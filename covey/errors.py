"""The one exception hierarchy users catch: every user-facing failure is a `CoveyError`."""

from __future__ import annotations


class CoveyError(Exception):
    """Base of every error Covey raises on purpose; its message is meant for people."""

    exit_code: int = 1
    http_status: int = 400


class ConfigError(CoveyError):
    """A setting is missing or malformed."""


class ValidationError(CoveyError):
    """User input (an address, an amount, an id) is malformed or out of range."""


class ChainError(CoveyError):
    """A chain call failed; for a revert the message is the contract's own reason."""

    http_status = 502

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ChainBusyError(ChainError):
    """The embedded chain's data directory is held by another process."""


class WalletError(CoveyError):
    """A key is unknown, locked, or its password is wrong."""


class StorageError(CoveyError):
    """An artifact is missing, malformed, oversized or fails its hash check."""

    http_status = 404


class IntegrityError(StorageError):
    """Downloaded bytes do not hash to the requested digest."""

    http_status = 422


class ModelError(CoveyError):
    """A model or weights file cannot be built, loaded or evaluated."""

    http_status = 422


class ComputeError(CoveyError):
    """Compute work (a rented job, a sandboxed unit, a verifier's re-run) failed, or did not finish in time.

    Here rather than in `covey.compute`, so a buyer in another capability (an Arena trainer renting its
    training) can tell a failed rental from other errors without importing the compute market.
    """


class PaymentError(CoveyError):
    """An x402 payment is missing, malformed or invalid."""

    http_status = 402
