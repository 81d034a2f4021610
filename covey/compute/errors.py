"""The compute market's exceptions, in one place; each is a `covey.errors.CoveyError`.

Catch the level you care about:

* CoveyError
  + ComputeError (covey.errors) - compute work failed or did not finish in time
  | + RentalError - renting failed before any usable result (escrow short, a unit failed, wrong key)
  | | + NoBids - a job's bid window closed without a bid
  | + ComputeTimeout - a job did not reach the wanted state in time
  | + SandboxError - a unit could not be set up (bad name, missing input, unknown program)
  | + InconclusiveCheck - a verifier's own re-run says nothing about the provider's
  + ValidationError (covey.errors)
    + SealError - a sealed output does not open (wrong key, wrong unit, not sealed)
    + NotApproved - a compute-to-data algorithm its data owner has not approved
"""

from __future__ import annotations

from covey.errors import ComputeError, ValidationError


class RentalError(ComputeError):
    """Renting compute failed before any usable result: escrow short, no bid, or the rented unit failed."""


class NoBids(RentalError):
    """A job's bid window closed without a single bid: no provider fits its needs at its price."""


class ComputeTimeout(ComputeError):
    """A job did not reach the wanted state in time (no provider running, or nobody verifying)."""


class SandboxError(ComputeError):
    """A unit could not be set up: a bad name, a missing or corrupt input, an unknown program."""


class InconclusiveCheck(ComputeError):
    """The verifier's own re-run says nothing about the provider's (it timed out or was cancelled)."""


class SealError(ValidationError):
    """A sealed output cannot be opened: wrong key, wrong unit, or not a sealed output at all."""


class NotApproved(ValidationError):
    """A compute-to-data job whose algorithm the data owner has not approved."""


__all__ = [
    "ComputeError",
    "ComputeTimeout",
    "InconclusiveCheck",
    "NoBids",
    "NotApproved",
    "RentalError",
    "SandboxError",
    "SealError",
]
