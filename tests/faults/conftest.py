"""Helpers for the faults suite: Covey services as real processes a test can SIGKILL, and bounded waits.

Every fault test starts the service it kills the way a user does (`python -m covey.cli ...` or the module a
CLI command runs), each with its own log file under the test's tmp_path, and kills it with SIGKILL: no
handler runs, nothing is flushed, the OS only closes its files and sockets. The `service` context manager
stops whatever is still running when the test ends, so a failed assertion never leaves a process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from eth_account.signers.local import LocalAccount

from covey.gateway.registry import HostRegistryClient
from tests.gateway_api.conftest import World, world
from tests.support import free_port, wait_for_rpc

__all__ = ["World", "world"]  # the gateway API tests' world (a finalised model, hosts registry), per module

COVEY = [sys.executable, "-m", "covey.cli"]
"""The `covey` command, run by this interpreter (subprocesses inherit PYTHONPATH, so they run this checkout)."""

T = TypeVar("T")


def covey_env(home: Path, *, rpc_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a Covey process of its own: this data directory, no other COVEY_ settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVEY_")}
    env.update(COVEY_HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    if rpc_url:
        env["COVEY_RPC_URL"] = rpc_url
    return env


def wait_for(condition: Callable[[], T], what: str, timeout_s: float, poll_s: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy (returned); AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class Service:
    """One running service process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def sigkill(self) -> None:
        """`kill -9` the service and reap it."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.process.returncode == -signal.SIGKILL, f"{self.name} exited {self.process.returncode} first"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within 30 s."""
        if not self.alive:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@contextmanager
def service(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log: Path,
    ready: Callable[[], object],
    *,
    timeout_s: float = 120.0,
) -> Iterator[Service]:
    """Start `argv` with output to `log`; yield once `ready()` holds; stop it on exit if it is still running."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    running = Service(name, process, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if not running.alive:
                raise RuntimeError(f"{name} exited with {process.returncode} before it was ready:\n{running.tail()}")
            try:
                if ready():
                    break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within {timeout_s:.0f}s:\n{running.tail()}")
            time.sleep(0.2)
        yield running
    finally:
        running.stop()


def answers_http(url: str) -> Callable[[], bool]:
    """A readiness check: `url` answers 200."""
    return lambda: httpx.get(url, timeout=2).status_code == 200


@contextmanager
def chain_server(home: Path, log: Path, *, port: int | None = None) -> Iterator[tuple[Service, str]]:
    """`covey chain serve` on the embedded chain in `home`; yields the service and its JSON-RPC URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*COVEY, "chain", "serve", "--port", str(port)]

    def ready() -> bool:
        wait_for_rpc(url, timeout_s=1)
        return True

    with service("covey chain serve", argv, covey_env(home), log, lambda: _quietly(ready)) as served:
        yield served, url


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except RuntimeError:
        return False


GATEWAY_ACCOUNT = "dev3"
"""The account the `world` lists as a gateway in its HostRegistry."""


@contextmanager
def gateway_process(
    world: World, settlement: str, log: Path, *args: str, port: int | None = None
) -> Iterator[tuple[Service, str]]:
    """`covey gateway serve --settlement SETTLEMENT ARGS...` on the world's chain; yields it and its base URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*COVEY, "gateway", "serve", "--port", str(port), "--settlement", settlement, "--from", GATEWAY_ACCOUNT]
    argv += ["--arena", world.arena.address, "--registry", world.registry.address, *args]
    env = covey_env(world.home, rpc_url=world.rpc_url)
    with service(f"gateway ({settlement})", argv, env, log, answers_http(f"{url}/health"), timeout_s=180) as running:
        yield running, url


COV = 10**18
HOST_ROLE = 2


def stake_host(world: World, account: LocalAccount, amount: int = 100 * COV) -> None:
    """Give `account` COV from the world's owner and stake it for the host role (the registry's minimum)."""
    world.chain.transact(world.cov.functions.transfer(account.address, amount), world.owner)
    world.chain.transact(world.cov.functions.approve(world.staking.address, amount), account)
    world.chain.transact(world.staking.functions.stake(HOST_ROLE, amount), account)


@contextmanager
def host_process(
    world: World, name: str, account: LocalAccount, log: Path, *, price: str, tokens_per_s: float = 0.0
) -> Iterator[tuple[Service, str]]:
    """`covey host serve --from NAME` for the world's model; yields once it answers and the registry lists its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*COVEY, "host", "serve", "--model", world.model_id, "--port", str(port), "--price", price]
    argv += ["--tokens-per-s", str(tokens_per_s), "--arena", world.arena.address]
    argv += ["--registry", world.registry.address, "--from", name]

    def ready() -> bool:
        registered = {
            info.address: info.endpoint for info in HostRegistryClient(world.chain, world.registry.address).hosts()
        }
        return registered.get(account.address) == url and answers_http(f"{url}/health")()

    env = covey_env(world.home, rpc_url=world.rpc_url)
    with service(f"host {name}", argv, env, log, ready, timeout_s=180) as running:
        yield running, url
