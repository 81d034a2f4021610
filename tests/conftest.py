"""Shared fixtures: an isolated COVEY_HOME per test, a real anvil node, and chains on every backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from covey.chain import Chain

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = REPO_ROOT / "node_modules" / ".bin" / "anvil"


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


@pytest.fixture(autouse=True)
def covey_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data directory and no RPC URL unless it sets one."""
    home = tmp_path / "covey-home"
    monkeypatch.setenv("COVEY_HOME", str(home))
    monkeypatch.delenv("COVEY_RPC_URL", raising=False)
    monkeypatch.delenv("COVEY_STORE_URL", raising=False)
    # Compiled contracts are cached by source hash; share the cache across tests to save compile time.
    shared_cache = REPO_ROOT / ".pytest_cache" / "covey-contracts"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir(parents=True, exist_ok=True)
    os.symlink(shared_cache, home / "cache" / "contracts")
    return home


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """A real anvil node (npm @foundry-rs/anvil) on a free port, for the whole session."""
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
        wait_for_rpc(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def embedded_chain(covey_home: Path) -> Iterator[Chain]:
    """The persistent in-process chain in this test's data directory."""
    chain = Chain.embedded(covey_home / "chain")
    yield chain
    chain.close()


@pytest.fixture
def anvil_chain(anvil_url: str) -> Chain:
    """A connection to the shared anvil node (state accumulates across tests: use fresh deployments)."""
    return Chain.from_rpc(anvil_url)


@pytest.fixture(params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest) -> Chain:
    """The same test on both backends: the embedded chain and a real anvil node."""
    if request.param == "anvil":
        return request.getfixturevalue("anvil_chain")  # type: ignore[no-any-return]
    return request.getfixturevalue("embedded_chain")  # type: ignore[no-any-return]
