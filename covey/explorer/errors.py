"""The explorer's exceptions, in one place; each is a `covey.errors.CoveyError`.

* CoveyError
  + NotFound - what a page asked for does not exist (HTTP 404, the message shown to whoever asked)
"""

from __future__ import annotations

from covey.errors import CoveyError


class NotFound(CoveyError):
    """What a page asked for does not exist; the message is shown to the person who asked."""

    http_status = 404


__all__ = ["NotFound"]
