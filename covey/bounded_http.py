"""`BoundedRequests`: an ASGI middleware that bounds every request before the app (FastAPI, pydantic) parses it.

    app.add_middleware(BoundedRequests, max_body_bytes=1 << 20, render=openai_error)

It refuses, in the API's own error shape (`render`), a URL longer than `max_url_bytes` (414), headers larger
than `max_header_bytes` (431), a body larger than `max_body_bytes` (413: by its `Content-Length` before a
byte is kept, else while reading; the rest is read and dropped, within a bound, so the client sees the
answer) and a body nested deeper than `max_depth` (400). Only then does the app run, and it reads the body
it was checked with. Every Covey HTTP server (gateway, host, facilitator,
explorer) puts this first, so no JSON parser of theirs ever sees unbounded input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covey.bounds import MAX_JSON_DEPTH, InputTooLargeError, UntrustedInputError, check_json_bounds

DEFAULT_MAX_URL_BYTES = 8 * 1024
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
"""Far above any real request's headers (an x402 payment header is ~1.5 KB, at most 16 KB)."""

# A refused body is read to its end (and dropped) up to this many times the bound, at least 1 MiB, so the
# client gets the error; beyond that the connection is closed on it.
DRAIN_FACTOR = 4
MIN_DRAIN_BYTES = 1 << 20

ErrorRenderer = Callable[[UntrustedInputError], dict[str, Any]]


class UrlTooLongError(InputTooLargeError):
    """The request's path and query string exceed the server's bound."""

    http_status = 414


class HeadersTooLargeError(InputTooLargeError):
    """The request's headers exceed the server's bound."""

    http_status = 431


def plain_error(error: UntrustedInputError) -> dict[str, Any]:
    """`{"error": message}`: the error shape of the facilitator and the explorer's API."""
    return {"error": str(error)}


class BoundedRequests:
    """Pure ASGI (responses stream through untouched); the request body is read whole, checked, then replayed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_depth: int = MAX_JSON_DEPTH,
        max_url_bytes: int = DEFAULT_MAX_URL_BYTES,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        render: ErrorRenderer = plain_error,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_head(scope)
        except UntrustedInputError as bad_head:
            await self._refuse(send, bad_head, close=not await self._drain(receive))
            return
        body, refused, close = await self._read_body(scope, receive)
        if refused is None and body:
            try:
                # Every Covey API takes JSON bodies only; the scan is one regex pass, cheap next to the parse.
                check_json_bounds(body, max_bytes=self.max_body_bytes, max_depth=self.max_depth, what="request body")
            except UntrustedInputError as bad_body:
                refused = bad_body
        if refused is not None:
            await self._refuse(send, refused, close=close)
        elif body is not None:  # None: the client went away mid-body, there is nobody to answer
            await self.app(scope, _replay(body, receive), send)

    def _check_head(self, scope: Scope) -> None:
        url_bytes = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string", b""))
        if url_bytes > self.max_url_bytes:
            raise UrlTooLongError(f"the request's URL is {url_bytes:,} bytes; the limit is {self.max_url_bytes:,}")
        header_bytes = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
        if header_bytes > self.max_header_bytes:
            raise HeadersTooLargeError(
                f"the request's headers are {header_bytes:,} bytes; the limit is {self.max_header_bytes:,}"
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, UntrustedInputError | None, bool]:
        """(body, None, False) within bounds; (None, error, close) when too large; (None, None, True) on disconnect.

        `close`: the refused body could not be read to its end, so the connection cannot carry another request.
        """
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the HTTP server has already refused a malformed length
                if declared > self.max_body_bytes:
                    finished = declared <= self._drain_limit and await self._drain(receive)
                    return None, self._too_large(declared), not finished
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None, True
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.max_body_bytes:  # a chunked body has no length to check up front
                finished = not more or await self._drain(receive)
                return None, self._too_large(size, at_least=more), not finished
            chunks.append(chunk)
            if not more:
                return b"".join(chunks), None, False

    @property
    def _drain_limit(self) -> int:
        return max(DRAIN_FACTOR * self.max_body_bytes, MIN_DRAIN_BYTES)

    async def _drain(self, receive: Receive) -> bool:
        """Read and drop the rest of a refused body, up to a bound; whether its end was reached.

        A client sends its whole body before it reads the answer: closing on unread bytes resets the
        connection, and the client would see a broken connection instead of the error.
        """
        drained = 0
        while drained <= self._drain_limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    def _too_large(self, size: int, *, at_least: bool = False) -> InputTooLargeError:
        more = "more than " if at_least else ""
        return InputTooLargeError(f"the request body is {more}{size:,} bytes; the limit is {self.max_body_bytes:,}")

    async def _refuse(self, send: Send, error: UntrustedInputError, *, close: bool) -> None:
        body = json.dumps(self.render(error), separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:  # part of the body is still on the wire: it must not be parsed as the next request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the checked body once, then waits on the client (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
