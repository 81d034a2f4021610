"""Shared fixtures: an isolated COVEY_HOME per test, a real anvil node, and chains on every backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from covey.chain import Chain
from tests.support import REPO_ROOT, anvil_node


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
    with anvil_node() as url:
        yield url


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
