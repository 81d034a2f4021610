"""Gateway fixtures: a private anvil node, a fresh USD token per test, funded payers, servers on real ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from covey.chain import Chain, dev_accounts

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"
PAYER_FUNDS = 1_000_000  # 1 USD in 6-decimal units


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float = 20.0, *, json_rpc: bool = False) -> None:
    """Block until something answers HTTP at `url` (a JSON-RPC node when `json_rpc`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json_rpc:
                httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2)
            else:
                httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered at {url} within {timeout_s}s")


@pytest.fixture(scope="session")
def gateway_anvil_url() -> Iterator[str]:
    """A private anvil node for the gateway tests.

    Not the shared one: x402 validity windows are wall-clock based, and other tests move the shared
    node's clock forward (`evm_increaseTime`), which would expire every payment signed here.
    """
    if not ANVIL_BIN.exists() or shutil.which("node") is None:
        pytest.fail("anvil is not installed: run `make test` (it runs `npm ci`) to install node_modules")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL_BIN), "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, json_rpc=True)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def gw_chain(request: pytest.FixtureRequest) -> Chain:
    """The chain a test pays on: the embedded chain unless parametrized (`indirect`) with "anvil"."""
    if getattr(request, "param", "embedded") == "anvil":
        return Chain.from_rpc(request.getfixturevalue("gateway_anvil_url"))
    return request.getfixturevalue("embedded_chain")  # type: ignore[no-any-return]


@dataclass
class Money:
    """One test's money: a fresh USD token, the accounts that move it, and a payee with no history."""

    chain: Chain
    usd: Contract
    deployer: LocalAccount
    facilitator: LocalAccount
    payee: str

    def fund(self, amount: int = PAYER_FUNDS) -> LocalAccount:
        """A new payer holding `amount` USD and no ETH: x402 payments are gasless for the payer."""
        payer: LocalAccount = Account.create()
        if amount:
            self.chain.transact(self.usd.functions.faucet(payer.address, amount), self.deployer)
        return payer

    def balance(self, address: str) -> int:
        return int(self.usd.functions.balanceOf(address).call())

    def authorizations_used(self, payer: str | None = None) -> list[dict[str, Any]]:
        """Every `AuthorizationUsed` event of this token (optionally for one payer): one per settled payment."""
        events = self.usd.events.AuthorizationUsed().get_logs(from_block=0)
        return [dict(e["args"]) for e in events if payer is None or e["args"]["authorizer"] == payer]


@pytest.fixture
def money(gw_chain: Chain) -> Money:
    deployer, facilitator = dev_accounts(2)
    usd = gw_chain.deploy("USDToken", sender=deployer)
    return Money(gw_chain, usd, deployer, facilitator, Account.create().address)


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def demo_process(env: dict[str, str], args: list[str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The demo app as a separate Python process (so a test can SIGKILL it); killed on exit if still alive."""
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "covey.gateway.x402.demo_app", *args, "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo app exited with {proc.returncode}: see {log_path}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/free", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
