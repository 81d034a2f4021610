"""The embedded chain over HTTP JSON-RPC (single and batch requests), for other processes.

A threaded server speaking a lean HTTP/1.1 with keep-alive and Nagle disabled: with Nagle on,
the delayed-ACK interplay caps a Python HTTP server near 10 requests/s per connection. Requests
from all connections go through one dispatcher, which serialises engine access.
While serving, `data_dir/serve.json` says where, so `running_server_url` can find it.

Every byte from a client is bounded before it costs anything (`RpcLimits`): the body's size
(413 past it, unread) and nesting depth (checked by `covey.bounds` before the JSON parser sees
it), the batch length, how long a connection may sit silent, and how many are served at once.
Whatever a client sends, the answer is a JSON-RPC error object, never a dropped connection.
A server refuses to start if something raised the recursion limit past what the C stack takes.

Calls run in their requests' threads, and a pure-Python EVM loop holds the GIL between the
interpreter's forced switches, so while calls run `serve_rpc` (which owns its process) lowers the
switch interval from 5 ms to 1 ms. Measured with `covey chain serve` on a loaded 2-core machine,
another client's transfer (send + receipt) took, median/max: 1 maximal call running 14/22 ms at
5 ms and 12/22 ms at 1 ms; 2 calls 49/130 vs 16/41 ms; 4 calls 126/200 vs 26/45 ms
(eth_blockNumber 33/61 vs 11/40). Only while calls run: with 1 ms all the time, a lone client's
transfers/s varied more and averaged lower on the loaded machine (forced switches to the journal's
flusher thread), and nothing needs the shorter interval then.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from socketserver import StreamRequestHandler
from types import FrameType
from typing import Any

from covey.bounds import UntrustedInputError, check_recursion_limit, loads_json
from covey.chain._embedded.engine import CHAIN_ID
from covey.chain._embedded.limits import RpcLimits
from covey.chain._embedded.node import EmbeddedNode
from covey.chain._embedded.rpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Dispatcher, error_response
from covey.chain.errors import RpcError
from covey.errors import ChainError

SERVE_FILE = "serve.json"
# While every connection slot is busy, the accept loop waits this long for one, then polls again.
_ACCEPT_WAIT_S = 0.1
# The GIL switch interval while calls run under `serve_rpc` (CPython's default is 5 ms); see the module docstring.
SERVE_CALL_SWITCH_INTERVAL_S = 0.001
_MAX_LINE_BYTES = 64 * 1024
_MAX_HEADERS = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
}


class _RpcHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.limits = limits = dispatcher.limits
        self.request_queue_size = limits.backlog  # read by listen() in the base constructor
        self._connection_slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__(address, _RpcHandler)
        self.dispatcher = dispatcher

    def get_request(self) -> tuple[Any, Any]:
        # One thread per connection, so past the bound a connection is not accepted until a slot frees:
        # it waits in the listen backlog, in arrival order (idle holders of slots are closed after the
        # idle timeout). Refusing instead raced with clients still sending their request.
        if not self._connection_slots.acquire(timeout=_ACCEPT_WAIT_S):
            raise OSError("every connection slot is busy")  # serve_forever selects and comes back
        try:
            return super().get_request()
        except BaseException:
            self._connection_slots.release()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_slots.release()

    def answer(self, body: bytes) -> bytes:
        """The JSON-RPC response (single or batch) to a request body, as JSON bytes."""
        limits = self.limits
        try:
            request = loads_json(body, max_bytes=limits.max_body_bytes, what="the request body")
        except UntrustedInputError as exc:
            return _json(error_response(None, RpcError(PARSE_ERROR, f"parse error: {exc}")))
        dispatcher = self.dispatcher
        response: Any
        if isinstance(request, list):
            if not request:
                response = error_response(None, RpcError(INVALID_REQUEST, "empty batch"))
            elif len(request) > limits.max_batch:
                too_long = RpcError(
                    INVALID_REQUEST, f"batch too large: {len(request)} requests; the limit is {limits.max_batch}"
                )
                response = error_response(None, too_long)
            else:
                response = [dispatcher.handle(item) for item in request]
        else:
            response = dispatcher.handle(request)
        return _json(response)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _error_body(code: int, message: str) -> bytes:
    return _json(error_response(None, RpcError(code, message)))


class _RpcHandler(StreamRequestHandler):
    """HTTP/1.1 with keep-alive, just enough of it for JSON-RPC clients.

    `BaseHTTPRequestHandler` parses headers with the email package and writes the status line
    and each header separately, which costs more than answering most calls; this reads only
    the request line and the three headers that matter and answers with one `sendall`.
    """

    server: _RpcHTTPServer

    def setup(self) -> None:
        super().setup()
        # Every read and write waits at most this long: a client silent between requests, or in the
        # middle of one, loses its connection (and its thread) instead of holding it forever.
        self.connection.settimeout(self.server.limits.idle_timeout_s)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # idle timeouts and resets end the connection, quietly
            while self._handle_one():
                pass

    def _handle_one(self) -> bool:
        """Answer one request; returns whether the connection stays open for another."""
        request_line = self.rfile.readline(_MAX_LINE_BYTES + 1)
        if not request_line:
            return False
        parts = request_line.split()
        if len(request_line) > _MAX_LINE_BYTES or len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(400, _error_body(INVALID_REQUEST, "malformed HTTP request line"), keep_alive=False)
            return False
        method, version = parts[0], parts[2]
        headers: dict[bytes, bytes] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n", b""):
                break
            if len(line) > _MAX_LINE_BYTES:
                self._reply(431, _error_body(INVALID_REQUEST, "an HTTP header line is too long"), keep_alive=False)
                return False
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        else:
            self._reply(431, _error_body(INVALID_REQUEST, "too many HTTP headers"), keep_alive=False)
            return False
        connection = headers.get(b"connection", b"").lower()
        keep_alive = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
        if b"transfer-encoding" in headers:
            message = "send JSON-RPC requests with a Content-Length"
            self._reply(411, _error_body(INVALID_REQUEST, message), keep_alive=False)
            return False
        max_bytes = self.server.limits.max_body_bytes
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            length = -1
        if not 0 <= length <= max_bytes:
            # As geth: 413, and the body is never read.
            message = f"request body too large: a JSON-RPC POST needs a Content-Length up to {max_bytes} bytes"
            self._reply(413, _error_body(INVALID_REQUEST, message), keep_alive=False)
            return False
        if headers.get(b"expect", b"").lower() == b"100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            return False  # the client went away mid-request
        if method != b"POST":
            self._reply(405, _error_body(INVALID_REQUEST, "send JSON-RPC requests with POST"), keep_alive)
        elif not length:
            message = f"a JSON-RPC POST needs a Content-Length up to {max_bytes} bytes"
            self._reply(411, _error_body(INVALID_REQUEST, message), keep_alive)
        else:
            try:
                answer = self.server.answer(body)
            except Exception as exc:  # a bug: still an answer, and the connection lives on
                answer = _error_body(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")
            self._reply(200, answer, keep_alive)
            with contextlib.suppress(ChainError):  # a failed fsync is reported by the next read
                self.server.dispatcher.commit_writes()
        return keep_alive

    def _reply(self, status: int, body: bytes, keep_alive: bool) -> None:
        closing = "" if keep_alive else "Connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{closing}\r\n"
        )
        with contextlib.suppress(OSError):  # the client is gone; the next read ends this connection
            self.wfile.write(head.encode() + body)


@dataclass
class ServerHandle:
    """A server running in a background thread; `shutdown` stops it and removes serve.json."""

    url: str
    _server: _RpcHTTPServer
    _thread: threading.Thread
    _serve_file: Path | None
    _stopped: bool = field(default=False)

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        if self._serve_file is not None:
            _remove_serve_file(self._serve_file)


def _bind(
    node: EmbeddedNode, host: str, port: int, limits: RpcLimits | None, *, owns_process: bool = False
) -> tuple[_RpcHTTPServer, str]:
    try:
        check_recursion_limit()
    except RuntimeError as exc:
        raise ChainError(f"refusing to serve the chain: {exc}") from exc
    try:
        switch = SERVE_CALL_SWITCH_INTERVAL_S if owns_process else None
        server = _RpcHTTPServer((host, port), Dispatcher(node, limits, call_switch_interval_s=switch))
    except OSError as exc:
        raise ChainError(f"cannot serve the chain on {host}:{port}: {exc}") from exc
    bound_host, bound_port = server.server_address[:2]
    host_text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    return server, f"http://{host_text}:{bound_port}"


def _write_serve_file(node: EmbeddedNode, url: str) -> Path:
    path = node.data_dir / SERVE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(temporary, path)
    return path


def _remove_serve_file(path: Path) -> None:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    # Only our own file: a later server of the same directory may have replaced it.
    if recorded.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def start_server_thread(
    node: EmbeddedNode,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    announce: bool = True,
    limits: RpcLimits | None = None,
) -> ServerHandle:
    """Serve `node` from a daemon thread (port 0 picks a free port); `announce` writes serve.json."""
    server, url = _bind(node, host, port, limits)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"covey-rpc {url}", daemon=True
    )
    thread.start()
    serve_file = _write_serve_file(node, url) if announce else None
    return ServerHandle(url, server, thread, serve_file)


def serve_rpc(
    node: EmbeddedNode,
    host: str = "127.0.0.1",
    port: int = 8545,
    *,
    limits: RpcLimits | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `node` over HTTP JSON-RPC until interrupted (Ctrl-C or SIGTERM); the caller closes `node`.

    `on_ready(url)` is called once the port is bound and serve.json written (to print the URL).
    Raises `ChainError` if the address cannot be bound.
    """
    server, url = _bind(node, host, port, limits, owns_process=True)
    serve_file = _write_serve_file(node, url)
    if on_ready is not None:
        on_ready(url)
    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        # Turn SIGTERM into SystemExit so the finally block below removes serve.json.
        def stop(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(0)

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        _remove_serve_file(serve_file)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def running_server_url(data_dir: Path, timeout_s: float = 2.0) -> str | None:
    """The URL of a live server of the chain in `data_dir`, or None.

    Live means: serve.json exists, its pid runs, and the URL answers eth_chainId with 31337.
    """
    try:
        recorded = json.loads((data_dir / SERVE_FILE).read_text())
        url, pid = str(recorded["url"]), int(recorded["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(pid):
        return None
    request = urllib.request.Request(
        url,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("result") != hex(CHAIN_ID):
        return None
    return url
