"""The Alliance's exceptions, in one place; each is a `covey.errors.CoveyError`.

* CoveyError
  + ValidationError (covey.errors)
  | + AggregationError - an update, an aggregate or a robust rule's parameter is malformed or out of range
  + FlowerError - the Flower executables are missing, a Flower process died, or a run did not complete
  + ChainError (covey.errors) - an Alliance call reverted; `.reason` is the contract's `alliance: ...` message
"""

from __future__ import annotations

from covey.errors import CoveyError, ValidationError


class AggregationError(ValidationError):
    """An update, an aggregate, or a parameter of a robust rule is malformed or out of range."""


class FlowerError(CoveyError):
    """The Flower executables are missing, a Flower process died, or a run did not complete."""


__all__ = ["AggregationError", "FlowerError"]
