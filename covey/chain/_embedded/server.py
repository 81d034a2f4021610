"""The embedded chain over HTTP JSON-RPC (single and batch requests), for other processes.

A threaded `http.server` with keep-alive (HTTP/1.1) and Nagle disabled: with Nagle on, the
delayed-ACK interplay caps a Python HTTP server near 10 requests/s per connection. Requests
from all connections go through one dispatcher, which serialises engine access.
While serving, `data_dir/serve.json` says where, so `running_server_url` can find it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from covey.chain._embedded.engine import CHAIN_ID
from covey.chain._embedded.node import EmbeddedNode
from covey.chain._embedded.rpc import INVALID_REQUEST, PARSE_ERROR, Dispatcher, RpcError
from covey.errors import ChainError

SERVE_FILE = "serve.json"
_MAX_BODY_BYTES = 64 * 1024 * 1024


class _RpcHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        super().__init__(address, _RpcHandler)
        self.dispatcher = dispatcher


class _RpcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RpcHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY_BYTES:
            self._reply(411, {"error": "a JSON-RPC POST needs a Content-Length up to 64 MiB"})
            return
        body = self.rfile.read(length)
        try:
            request = json.loads(body)
        except ValueError as exc:
            error = RpcError(PARSE_ERROR, f"parse error: {exc}")
            self._reply(200, {"jsonrpc": "2.0", "id": None, "error": error.to_json()})
            return
        dispatcher = self.server.dispatcher
        response: Any
        if isinstance(request, list):
            if request:
                response = [dispatcher.handle(item) for item in request]
            else:
                empty = RpcError(INVALID_REQUEST, "empty batch")
                response = {"jsonrpc": "2.0", "id": None, "error": empty.to_json()}
        else:
            response = dispatcher.handle(request)
        self._reply(200, response)

    def do_GET(self) -> None:
        self._reply(405, {"error": "send JSON-RPC requests with POST"})

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: one line per request would cost more than the request."""


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


def _bind(node: EmbeddedNode, host: str, port: int) -> tuple[_RpcHTTPServer, str]:
    try:
        server = _RpcHTTPServer((host, port), Dispatcher(node))
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
    node: EmbeddedNode, host: str = "127.0.0.1", port: int = 0, *, announce: bool = True
) -> ServerHandle:
    """Serve `node` from a daemon thread (port 0 picks a free port); `announce` writes serve.json."""
    server, url = _bind(node, host, port)
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
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `node` over HTTP JSON-RPC until interrupted (Ctrl-C or SIGTERM); the caller closes `node`.

    `on_ready(url)` is called once the port is bound and serve.json written (to print the URL).
    Raises `ChainError` if the address cannot be bound.
    """
    server, url = _bind(node, host, port)
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
