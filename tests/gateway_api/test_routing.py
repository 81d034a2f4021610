"""The gateway routes across staked host processes: cheapest healthy host first, hosts paid with the subsidy,
failover when a host is killed mid-request, no routing to a host that fails health checks, and `/metrics`."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from openai import AsyncOpenAI, OpenAI
from x402.http.clients import x402HttpxClient

from covey.gateway.app import Gateway, GatewayConfig, build_gateway
from covey.gateway.pricing import quote, subsidy_for
from covey.gateway.x402.encoding import decode_payment_response

from .conftest import World, host_process, serve_in_thread
from .test_paid import official_x402


@dataclass
class Running:
    url: str
    gateway: Gateway


@pytest.fixture(scope="module")
def running(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = GatewayConfig(
        settlement="strict",
        arena=world.arena.address,
        registry=world.registry.address,
        spot_check_rate=0.0,
        payout_interval_s=0.5,
        health_interval_s=0.5,
        host_refresh_interval_s=0.5,
    )
    data_dir = tmp_path_factory.mktemp("gateway-data")
    gateway = build_gateway(
        world.chain, world.deployment, world.store, world.gateway_account, config, data_dir=data_dir
    )
    with serve_in_thread(gateway.app) as url:
        yield Running(url, gateway)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host-logs")


def wait_for(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def routable(running: Running) -> set[str]:
    hosts = httpx.get(f"{running.url}/health", timeout=10).json()["hosts"]
    return {h["host"] for h in hosts if h["healthy"] and not h["banned"]}


def paid_completion(running: Running, world: World, agent: LocalAccount, **options: Any) -> Any:
    async def ask() -> Any:
        async with x402HttpxClient(official_x402(agent, world), timeout=60) as http:
            client = AsyncOpenAI(base_url=f"{running.url}/v1", api_key="x402", http_client=http, max_retries=0)
            return await client.completions.with_raw_response.create(model=world.model_id, **options)

    return asyncio.run(ask())


def test_the_cheapest_healthy_host_serves_and_earns_its_full_price(running: Running, world: World, logs: Path) -> None:
    cheap, pricey = world.host_account(), world.host_account()
    with (
        host_process(world, cheap, price_usd=0.02, log_path=logs / "cheap.log"),
        host_process(world, pricey, price_usd=0.05, log_path=logs / "pricey.log"),
    ):
        wait_for(lambda: routable(running) == {cheap.address, pricey.address}, "both hosts to be routable")
        agent = world.payer()

        raw = paid_completion(running, world, agent, prompt="ROMEO:\n", max_tokens=40)

        price = quote(20_000, 40, 5_000)
        assert raw.headers["X-Covey-Host"] == cheap.address
        assert decode_payment_response(raw.headers["PAYMENT-RESPONSE"]).success
        assert world.usd_balance(agent.address) == 1_000_000 - price.price_atomic
        expected = price.price_atomic + subsidy_for(price.price_atomic, 5_000)
        wait_for(lambda: world.usd_balance(cheap.address) == expected, "the payout with subsidy")
        assert expected >= price.host_cost_atomic - 1  # the host earns its price; the agent paid half
        assert world.usd_balance(pricey.address) == 0


def test_a_stream_continues_on_another_host_when_its_host_is_killed(running: Running, world: World, logs: Path) -> None:
    slow, backup = world.host_account(), world.host_account()
    with (
        host_process(world, slow, price_usd=0.01, tokens_per_s=10, log_path=logs / "slow.log") as (slow_proc, _),
        host_process(world, backup, price_usd=0.03, log_path=logs / "backup.log"),
    ):
        wait_for(lambda: {slow.address, backup.address} <= routable(running), "both hosts to be routable")
        client = OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0, timeout=60)
        free_gateway = running.gateway.app.state.service
        free_gateway.paywall, paywall = None, free_gateway.paywall  # this story is about hosts, not payment
        try:
            with client.completions.with_streaming_response.create(
                model=world.model_id,
                prompt="JULIET:\n",
                max_tokens=40,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            ) as response:
                assert response.headers["X-Covey-Host"] == slow.address
                chunks = response.parse()
                first = next(iter(chunks))
                os.kill(slow_proc.pid, signal.SIGKILL)  # the host dies with the answer half written
                rest = list(chunks)
        finally:
            free_gateway.paywall = paywall

        text = first.choices[0].text + "".join(c.choices[0].text for c in rest if c.choices)
        usage = rest[-1].usage
        assert usage is not None and 0 < usage.completion_tokens <= 40
        assert text and len(text.encode()) <= 40
        wait_for(lambda: slow.address not in routable(running), "the dead host to fail its health checks")
        assert backup.address in routable(running)


def test_a_whole_answer_is_asked_again_of_another_host_when_its_host_dies(
    running: Running, world: World, logs: Path
) -> None:
    slow, backup = world.host_account(), world.host_account()
    with (
        host_process(world, slow, price_usd=0.005, tokens_per_s=10, log_path=logs / "slow2.log") as (slow_proc, _),
        host_process(world, backup, price_usd=0.03, log_path=logs / "backup2.log"),
    ):
        wait_for(lambda: {slow.address, backup.address} <= routable(running), "both hosts to be routable")
        agent = world.payer()
        answers: list[Any] = []
        asking = threading.Thread(
            target=lambda: answers.append(paid_completion(running, world, agent, prompt="ROMEO:", max_tokens=40))
        )
        asking.start()
        time.sleep(2.0)  # the slow host is a couple of seconds into its forty tokens
        os.kill(slow_proc.pid, signal.SIGKILL)
        asking.join(timeout=120)

        (raw,) = answers
        assert raw.status_code == 200
        assert raw.headers["X-Covey-Host"] == backup.address
        assert raw.parse().choices[0].text
        assert (
            len(
                world.usd.events.AuthorizationUsed().get_logs(
                    from_block=0, argument_filters={"authorizer": agent.address}
                )
            )
            == 1
        )  # paid once, though two hosts worked on it


def test_metrics_count_requests_tokens_payments_revenue_subsidy_and_failovers(running: Running) -> None:
    text = httpx.get(f"{running.url}/metrics", timeout=10).text

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    assert value('covey_gateway_requests_total{route="/v1/completions",status="200"}') >= 3
    assert value('covey_gateway_requests_total{route="/v1/completions",status="402"}') >= 2
    assert value('covey_gateway_tokens_total{kind="completion"') > 0
    assert value('covey_gateway_payments_total{mode="strict",outcome="settled"}') == 2
    assert value("covey_gateway_settlement_latency_seconds_count") == 2
    assert value("covey_gateway_revenue_usd_total") > 0
    assert value("covey_gateway_subsidy_usd_total") > 0
    assert value("covey_gateway_failovers_total") >= 2
    assert "covey_gateway_host_healthy{" in text
