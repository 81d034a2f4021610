"""A host that serves a different model under the consensus model's name is caught by a spot check (the
gateway replays the request at temperature 0 and compares), slashed through the HostRegistry, and dropped."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from openai import OpenAI

from covey.gateway.app import Gateway, GatewayConfig, build_gateway
from covey.gateway.backend import LocalBackend
from covey.gateway.host import HostConfig, create_host_app
from covey.gateway.models import ModelCatalog
from covey.gateway.registry import HostRegistryClient

from .conftest import COV, World, free_port, serve_in_thread, tiny_weights


@contextmanager
def host_in_thread(world: World, account: LocalAccount, catalog: ModelCatalog, price_per_1k: int) -> Iterator[str]:
    """A registered host serving `catalog`'s version of the world's model from a thread."""
    port = free_port()
    config = HostConfig(world.model_id, f"http://127.0.0.1:{port}", price_per_1k, heartbeat_interval_s=60)
    backend = LocalBackend(catalog, price_per_1k_atomic=price_per_1k)
    registry = HostRegistryClient(world.chain, world.registry.address)
    with serve_in_thread(create_host_app(backend, account, registry, config), port=port) as url:
        yield url


def impostor_catalog(world: World) -> ModelCatalog:
    """A catalog that calls another model by the consensus model's name: the cheat under test."""
    honest = world.catalog()
    honest.refresh()
    other = world.store.put(tiny_weights(seed=1, steps=3))
    catalog = ModelCatalog(world.chain, world.store, None)
    catalog.add(dataclasses.replace(honest.get(world.model_id), weights_digest=other.digest))
    return catalog


@pytest.fixture
def gateway(world: World, tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    config = GatewayConfig(
        settlement="free",
        arena=world.arena.address,
        registry=world.registry.address,
        spot_check_rate=1.0,
        health_interval_s=0.5,
        host_refresh_interval_s=0.5,
    )
    built = build_gateway(world.chain, world.deployment, world.store, world.gateway_account, config, data_dir=tmp_path)
    with serve_in_thread(built.app) as url:
        yield url, built


def test_an_impostor_host_is_caught_slashed_and_no_longer_routed(world: World, gateway: tuple[str, Gateway]) -> None:
    url, built = gateway
    impostor, honest = world.host_account(), world.host_account()
    with ExitStack() as hosts:
        hosts.enter_context(host_in_thread(world, impostor, impostor_catalog(world), price_per_1k=1_000))
        hosts.enter_context(host_in_thread(world, honest, world.catalog(), price_per_1k=30_000))
        _wait(lambda: _routable(url) == {impostor.address, honest.address}, "both hosts to be routable")
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)

        first = client.completions.with_raw_response.create(model=world.model_id, prompt="ROMEO:\n", max_tokens=16)
        assert first.headers["X-Covey-Host"] == impostor.address  # the cheapest host gets the work...
        _wait(lambda: len(built.spot_checker.results) == 1, "the spot check")  # type: ignore[union-attr]
        second = client.completions.with_raw_response.create(model=world.model_id, prompt="ROMEO:\n", max_tokens=16)
        _wait(lambda: len(built.spot_checker.results) == 2, "the second spot check")  # type: ignore[union-attr]

    caught, passed = built.spot_checker.results  # type: ignore[union-attr]
    assert (caught.host, caught.outcome, caught.slashed) == (impostor.address, "mismatch", 50 * COV)
    assert world.host_stake(impostor.address) == 50 * COV
    assert not world.registry.functions.isRegistered(impostor.address).call()
    assert second.headers["X-Covey-Host"] == honest.address  # ...until it is caught
    assert (passed.host, passed.outcome) == (honest.address, "match")
    assert world.host_stake(honest.address) == 100 * COV
    reports = world.registry.events.MismatchReported().get_logs(from_block=0)
    assert [r["args"]["host"] for r in reports][-1] == impostor.address


def _routable(url: str) -> set[str]:
    hosts = httpx.get(f"{url}/health", timeout=10).json()["hosts"]
    return {h["host"] for h in hosts if h["healthy"] and not h["banned"]}


def _wait(condition: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
