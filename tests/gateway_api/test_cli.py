"""`covey gateway|host|facilitator serve`: bad options get one clear error before serving anything, and on a
local chain each server signs with its own dev account unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covey.chain import dev_accounts
from covey.cli import facilitator_cmd, gateway_cmd, host_cmd
from covey.cli._context import LOCAL_SERVER_ACCOUNTS
from covey.errors import ValidationError, WalletError
from tests.support import anvil_node

from .conftest import COV, World, free_port

NO_SIGNER = "no signing account: pass --from NAME or set COVEY_KEY"


def _env(home: Path, rpc_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    return {**env, "COVEY_HOME": str(home), "COVEY_RPC_URL": rpc_url, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@contextmanager
def serving(world: World, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`covey ARGS...` as its own process on the world's chain, stopped when the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "covey.cli", *args],
            env=_env(world.home, world.rpc_url),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_up_line(process: subprocess.Popen[bytes], log: Path, marker: str, timeout_s: float = 180) -> str:
    """The server's output (words joined by single spaces: rich wraps lines) once it holds `marker`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = " ".join(log.read_text(errors="replace").split())
        if marker in text:
            return text
        assert process.poll() is None, f"exited with {process.returncode} before saying {marker!r}: {text[-2000:]}"
        time.sleep(0.2)
    raise AssertionError(f"never said {marker!r}: {log.read_text(errors='replace')[-2000:]}")


def test_the_gateway_refuses_an_unknown_settlement_mode() -> None:
    result = CliRunner().invoke(gateway_cmd.app, ["serve", "--settlement", "sometimes"])

    assert isinstance(result.exception, ValidationError)
    assert "strict, batched, free" in str(result.exception)


def test_a_host_without_stake_is_told_how_much_to_stake(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVEY_HOME", str(world.home))
    monkeypatch.setenv("COVEY_RPC_URL", world.rpc_url)
    args = ["serve", "--model", world.model_id, "--from", "dev7", "--registry", world.registry.address]

    result = CliRunner().invoke(host_cmd.app, args)

    assert isinstance(result.exception, ValidationError)
    assert "hosts need 100 COV staked for the host role" in str(result.exception)
    assert "covey stake add host 100" in str(result.exception)


def test_every_command_has_help() -> None:
    for app in (gateway_cmd.app, host_cmd.app, facilitator_cmd.app):
        result = CliRunner().invoke(app, ["serve", "--help"])
        assert result.exit_code == 0 and "--port" in result.output


def test_on_a_local_chain_each_server_signs_with_its_own_dev_account_and_says_which(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(set(LOCAL_SERVER_ACCOUNTS.values())) == len(LOCAL_SERVER_ACCOUNTS)  # no two race for one nonce
    accounts = dev_accounts(10)
    dev = {role: accounts[int(name.removeprefix("dev"))] for role, name in LOCAL_SERVER_ACCOUNTS.items()}
    servers = {
        "facilitator": ["facilitator", "serve", "--port", str(free_port())],
        "gateway": ["gateway", "serve", "--port", str(free_port()), "--local-price", "0.02"],
    }
    for role, args in servers.items():
        log = tmp_path / f"{role}.log"
        with serving(world, log, *args) as process:
            line = start_up_line(process, log, LOCAL_SERVER_ACCOUNTS[role])
        assert f"{dev[role].address} ({LOCAL_SERVER_ACCOUNTS[role]}, the local chain's default {role} account" in line

    # The host's dev account holds no COV yet: it is told how to get some, then it stakes and serves.
    monkeypatch.setenv("COVEY_HOME", str(world.home))
    monkeypatch.setenv("COVEY_RPC_URL", world.rpc_url)
    monkeypatch.delenv("COVEY_KEY", raising=False)
    host = dev["host"]
    assert world.cov.functions.balanceOf(host.address).call() == 0
    refused = CliRunner().invoke(host_cmd.app, ["serve", "--model", world.model_id])
    assert isinstance(refused.exception, ValidationError)
    assert f"`covey wallet faucet {host.address}` first" in str(refused.exception)
    world.chain.transact(world.cov.functions.transfer(host.address, 100 * COV), world.owner)
    log = tmp_path / "host.log"
    args = ["host", "serve", "--model", world.model_id, "--port", str(free_port()), "--stake", "100"]
    with serving(world, log, *args) as process:
        line = start_up_line(process, log, f"serving {world.model_id}")
    assert "staked 100 COV for the host role" in line
    assert f"host {host.address} ({LOCAL_SERVER_ACCOUNTS['host']}, the local chain's default host account" in line
    assert world.host_stake(host.address) == 100 * COV


def test_off_a_local_chain_the_servers_need_an_account(monkeypatch: pytest.MonkeyPatch, covey_home: Path) -> None:
    monkeypatch.delenv("COVEY_KEY", raising=False)
    with anvil_node("--chain-id", "4242") as url:  # a chain id no dev chain uses: not local
        monkeypatch.setenv("COVEY_RPC_URL", url)
        for app, args in (
            (gateway_cmd.app, ["serve"]),
            (host_cmd.app, ["serve", "--model", "covey-arena-1"]),
            (facilitator_cmd.app, ["serve"]),
        ):
            result = CliRunner().invoke(app, args)
            assert isinstance(result.exception, WalletError) and str(result.exception) == NO_SIGNER, result.output

        done = subprocess.run(
            [sys.executable, "-m", "covey.cli", "gateway", "serve"],
            env=_env(covey_home, url),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {NO_SIGNER}"
