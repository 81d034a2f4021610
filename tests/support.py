"""Helpers the conftests share: free ports, a real anvil node, an ASGI app in a thread, and transaction helpers.

Import as `tests.support` (tests run from the repository root with `--import-mode=importlib`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from covey.chain import Chain, dev_accounts
from covey.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"
# Without a cap anvil writes every old block's state under ~/.foundry/anvil/tmp: tens of GB over one test run.
ANVIL_FLAGS = ("--silent", "--max-persisted-states", "0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_rpc(url: str, timeout_s: float = 20.0) -> None:
    """Block until a JSON-RPC node answers eth_chainId at `url`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2)
            if reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no JSON-RPC node answered at {url} within {timeout_s}s")


@contextmanager
def anvil_node(*extra_args: str) -> Iterator[str]:
    """A real anvil node (npm @foundry-rs/anvil) on a free port; yield its URL once it answers, stop it on exit."""
    if not ANVIL_BIN.exists() or shutil.which("node") is None:
        pytest.fail("anvil is not installed: run `make test` (it runs `npm ci`) to install node_modules")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL_BIN), "--port", str(port), "--host", "127.0.0.1", *ANVIL_FLAGS, *extra_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def serve_in_thread(app: Any, port: int | None = None, *, start_timeout_s: float = 60) -> Iterator[str]:
    """Run an ASGI app under uvicorn on 127.0.0.1 (a free port by default) in a thread; yield its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@cache
def dev_keys(count: int) -> tuple[LocalAccount, ...]:
    """The first `count` dev accounts (cached: deriving keys is slow)."""
    return tuple(dev_accounts(count))


class Transactor:
    """`send` and `reverts` for a test world that has a `chain`."""

    chain: Chain

    def send(self, fn: ContractFunction, sender: LocalAccount) -> TxReceipt:
        return self.chain.transact(fn, sender)

    def reverts(self, fn: ContractFunction, sender: LocalAccount) -> str:
        """Send `fn` expecting a revert; return the contract's reason."""
        with pytest.raises(ChainError) as caught:
            self.chain.transact(fn, sender)
        assert caught.value.reason is not None, str(caught.value)
        return caught.value.reason
