"""Importing covey changes no process state; opening a chain makes keccak fast; settings come from `Settings`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from covey.config import Settings, debug_enabled

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

IMPORT_PROBE = """
import os, sys
before = dict(os.environ)
import covey, covey.config, covey.errors, covey.bounds, covey.storage
import covey.chain, covey.chain._embedded, covey.chain.deploy, covey.chain.units
import covey.cli._output, covey.cli._context
assert dict(os.environ) == before, sorted(set(os.environ.items()) ^ set(before.items()))
import eth_hash.auto, eth_utils
eth_utils.keccak(b"")  # eth-hash's own first-use choice
print(type(eth_hash.auto.keccak.hasher.__self__).__name__)
import tempfile
from pathlib import Path
from covey.chain import Chain
with Chain.embedded(Path(tempfile.mkdtemp()) / "chain") as chain:
    chain.mine()
print(type(eth_hash.auto.keccak.hasher.__self__).__name__)
"""


def run_probe(env: dict[str, str]) -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.split()


def test_importing_covey_writes_no_environment_and_opening_a_chain_picks_pysha3() -> None:
    env = {name: value for name, value in os.environ.items() if name != "ETH_HASH_BACKEND"}
    # Left alone, eth-hash picks pycryptodome; the first chain opened switches the process to pysha3.
    assert run_probe(env) == ["CryptodomeBackend", "PySha3Backend"]


def test_an_explicit_eth_hash_backend_is_left_alone() -> None:
    env = {**os.environ, "ETH_HASH_BACKEND": "pycryptodome"}
    assert run_probe(env) == ["CryptodomeBackend", "CryptodomeBackend"]


@pytest.mark.parametrize(
    ("value", "expected"), [("", False), ("0", False), ("1", True), ("yes", True), ("2", True), ("false", True)]
)
def test_covey_debug_is_on_for_any_value_but_empty_or_zero(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COVEY_DEBUG", value)
    assert Settings().debug is expected and debug_enabled() is expected
    # Read alone, so that the error of a malformed other setting still shows its traceback when asked to.
    monkeypatch.setenv("COVEY_CHAIN_DURABILITY", "sometimes")
    assert debug_enabled() is expected


def test_keys_and_endpoints_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVEY_HOST_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("COVEY_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    settings = Settings()
    assert settings.host_key is not None and settings.host_key.get_secret_value() == "0x" + "11" * 32
    assert "11" * 32 not in repr(settings)  # a key never shows in logs
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
