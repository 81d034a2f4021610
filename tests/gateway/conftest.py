"""Gateway fixtures: a private anvil node, a fresh USD token per test, funded payers, servers on real ports."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from covey.chain import Chain, dev_accounts
from tests.support import REPO_ROOT, anvil_node, free_port, serve_in_thread

__all__ = ["free_port", "serve_in_thread"]  # the gateway tests import these from here

PAYER_FUNDS = 1_000_000  # 1 USD in 6-decimal units


@pytest.fixture(scope="session")
def gateway_anvil_url() -> Iterator[str]:
    """A private anvil node for the gateway tests.

    Not the shared one: x402 validity windows are wall-clock based, and other tests move the shared
    node's clock forward (`evm_increaseTime`), which would expire every payment signed here.
    """
    with anvil_node() as url:
        yield url


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
def demo_process(env: dict[str, str], args: list[str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The demo app as a separate Python process (so a test can SIGKILL it); killed on exit if still alive."""
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    # The app is test scaffolding under tests/: the repository root on the path finds it (and this checkout's covey).
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "tests.x402_scaffolding.demo_app", *args, "--port", str(port)],
            env={**os.environ, **env, "PYTHONPATH": path},
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
