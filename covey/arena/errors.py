"""The Arena's exceptions, in one place; each is a `covey.errors.CoveyError`.

* CoveyError
  + NotReady - a node cannot act on a task yet (nothing to copy or score); it tries again on its next step
  + ChainError (covey.errors) - a contract call reverted; `.reason` is one of `covey.chain.reverts`
  + ComputeError (covey.errors) - training rented elsewhere failed; the trainer stops renting for the task
"""

from __future__ import annotations

from covey.errors import CoveyError


class NotReady(CoveyError):
    """The node cannot act yet (say, nothing to copy or score); it tries again on its next step."""


__all__ = ["NotReady"]
