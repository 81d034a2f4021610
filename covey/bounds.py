"""Bounds on untrusted bytes: size and nesting depth are checked before anything parses them.

Every server and every parser of bytes from others (request bodies, payment headers, weights metadata,
manifests) goes through `loads_json`. The depth scan touches only brackets and strings (one regex pass),
so a 1 MB body costs about as much as parsing it; a body nested 100,000 deep is refused before the JSON
parser sees it, whatever the interpreter's recursion limit.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from covey.errors import ValidationError

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects any Covey parser accepts (JSON-RPC and OpenAI bodies need < 10)."""

SANE_RECURSION_LIMIT = 10_000
"""Above this the interpreter's C stack may overflow before `RecursionError` is raised (py_ecc sets 100,000)."""

_BRACKETS_AND_STRINGS = re.compile(rb'[\[\]{}]|"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class UntrustedInputError(ValidationError):
    """Bytes from outside are too large, too deeply nested, or not the format they claim to be."""

    http_status = 400


class InputTooLargeError(UntrustedInputError):
    """Bytes from outside exceed the size bound of the parser they were sent to."""

    http_status = 413


def json_depth(data: bytes, *, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in `data`, counting brackets outside strings only.

    With `stop_above`, the scan ends as soon as the depth passes it (the result is then `stop_above + 1`).
    """
    depth = deepest = 0
    for match in _BRACKETS_AND_STRINGS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_json_bounds(
    data: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "body"
) -> bytes:
    """`data` as bytes, once its size and nesting are within bounds; raises `UntrustedInputError` otherwise."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise InputTooLargeError(f"{what} is {len(raw):,} bytes; the limit is {max_bytes:,}")
    if json_depth(raw, stop_above=max_depth) > max_depth:
        raise UntrustedInputError(f"{what} nests more than {max_depth} levels deep")
    return raw


def loads_json(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH, what: str = "body") -> Any:
    """Parse JSON from outside: size and depth checked first; any malformed input is an `UntrustedInputError`."""
    raw = check_json_bounds(data, max_bytes=max_bytes, max_depth=max_depth, what=what)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as bad:
        raise UntrustedInputError(f"{what} is not valid JSON: {bad}") from None


def check_recursion_limit() -> None:
    """Refuse to serve when something raised the recursion limit past what the C stack can take."""
    limit = sys.getrecursionlimit()
    if limit > SANE_RECURSION_LIMIT:
        raise RuntimeError(
            f"the interpreter's recursion limit is {limit:,} (above {SANE_RECURSION_LIMIT:,}): a deeply nested "
            "input would overflow the C stack instead of raising RecursionError; an import raised it"
        )
