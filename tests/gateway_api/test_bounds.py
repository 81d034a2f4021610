"""The gateway, hosts and the router bound what they parse: hostile bytes get a 4xx OpenAI error, never a crash.

An attacker killed `covey gateway serve` with SIGSEGV by a body of JSON arrays nested 100,000 deep; a host is
a stranger too, and its answers are bounded the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from starlette.types import Receive, Scope, Send

from covey.gateway.app import GatewayConfig, build_gateway
from covey.gateway.backend import LocalBackend
from covey.gateway.host import HostConfig, create_host_app
from covey.gateway.openai_api import MAX_BODY_BYTES
from covey.gateway.registry import HostRegistryClient
from covey.gateway.signing import GATEWAY_SIGNATURE_HEADER, GATEWAY_TIME_HEADER
from tests.untrusted import ATTACK_DEPTH, covey_serve, nested_arrays, nested_in_object

from .conftest import HOST_PRICE_PER_1K, World, host_process, local_gateway, serve_in_thread

DEEP_ERROR = {
    "message": "request body nests more than 64 levels deep",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_json",
}


@pytest.fixture(scope="module")
def gateway_url(world: World) -> Iterator[str]:
    with serve_in_thread(local_gateway(world)) as url:
        yield url


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=60)


def completion(world: World, **extra: Any) -> dict[str, Any]:
    return {"model": world.model_id, "prompt": "ROMEO:", "max_tokens": 3, **extra}


def test_the_nesting_attack_gets_an_openai_error_and_the_gateway_keeps_serving(gateway_url: str, world: World) -> None:
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        reply = post(f"{gateway_url}{route}", nested_arrays(ATTACK_DEPTH))
        assert reply.status_code == 400, route
        assert reply.json() == {"error": DEEP_ERROR}

    answer = httpx.post(f"{gateway_url}/v1/completions", json=completion(world), timeout=60)
    assert answer.status_code == 200 and answer.json()["choices"][0]["text"] is not None
    metrics = httpx.get(f"{gateway_url}/metrics", timeout=30).text
    assert 'covey_gateway_requests_total{route="/v1/completions",status="400"} 1.0' in metrics


def test_oversized_requests_are_refused_with_413_and_414(gateway_url: str, world: World) -> None:
    huge = json.dumps(completion(world, prompt="x" * MAX_BODY_BYTES)).encode()
    too_large = post(f"{gateway_url}/v1/completions", huge)
    too_long = httpx.get(f"{gateway_url}/v1/models?q={'x' * 10_000}", timeout=30)

    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "request_too_large"
    assert too_large.json()["error"]["type"] == "invalid_request_error"
    assert too_long.status_code == 414 and too_long.json()["error"]["code"] == "uri_too_long"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'{"model": "m", "prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}",  # past int()'s digit limit
        b'{"model": "m", "prompt": "hi", "seed": 1' + b"0" * 40 + b"}",
        b'{"model": "m", "prompt": "hi", "temperature": 1e999}',
        b'{"model": "m", "prompt": {"a": 1}}',
        b'{"model": "m", "prompt": "hi", "stop": [1, 2]}',
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "image"}]}]}',
        b'{"model": ' + b"[" * 60 + b"]" * 60 + b"}",
    ],
)
def test_malformed_bodies_get_a_4xx_openai_error_never_a_500(gateway_url: str, world: World, body: bytes) -> None:
    body = body.replace(b'"m"', json.dumps(world.model_id).encode())
    for route in ("/v1/completions", "/v1/chat/completions"):
        reply = post(f"{gateway_url}{route}", body)
        assert 400 <= reply.status_code < 500, (route, reply.status_code, reply.text)
        assert reply.json()["error"]["type"] == "invalid_request_error"


def test_covey_gateway_serve_survives_the_nesting_attack(world: World, tmp_path: Path) -> None:
    env = {"COVEY_HOME": str(world.home), "COVEY_RPC_URL": world.rpc_url, "OMP_NUM_THREADS": "1"}
    args = ["gateway", "serve", "--settlement", "free", "--local-price", "0.02", "--from", "dev3"]
    args += ["--arena", world.arena.address]
    with covey_serve(args, env=env, ready_path="/health", log_path=tmp_path / "gateway.log") as (url, proc):
        attack = post(f"{url}/v1/chat/completions", nested_arrays(ATTACK_DEPTH))
        models = httpx.get(f"{url}/v1/models", timeout=30)
        alive = proc.poll() is None

    assert attack.status_code == 400 and attack.json() == {"error": DEEP_ERROR}
    assert alive and models.status_code == 200 and models.json()["data"][0]["id"] == world.model_id


def test_a_host_refuses_the_nesting_attack_before_anything_parses_it(world: World) -> None:
    app = create_host_app(
        LocalBackend(world.catalog(), price_per_1k_atomic=HOST_PRICE_PER_1K),
        world.gateway_account,
        None,
        HostConfig(model_id=world.model_id, endpoint="http://127.0.0.1:1", price_per_1k_atomic=HOST_PRICE_PER_1K),
        register=False,
    )

    async def attack() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as http:
            return [
                await http.post("/v1/completions", content=nested_arrays(ATTACK_DEPTH)),
                await http.post("/v1/completions", content=nested_in_object("prompt", 100)),
                await http.get("/health"),
            ]

    deep, just_over_the_bound, health = asyncio.run(attack())
    assert (deep.status_code, just_over_the_bound.status_code, health.status_code) == (400, 400, 200)
    assert deep.json() == {"error": DEEP_ERROR}


def test_a_host_answers_malformed_gateway_signatures_with_401_not_500(world: World) -> None:
    app = create_host_app(
        LocalBackend(world.catalog(), price_per_1k_atomic=HOST_PRICE_PER_1K),
        world.gateway_account,
        HostRegistryClient(world.chain, world.registry.address),
        HostConfig(model_id=world.model_id, endpoint="http://127.0.0.1:1", price_per_1k_atomic=HOST_PRICE_PER_1K),
        register=False,
    )
    now = str(int(time.time()))
    forged = [
        {GATEWAY_TIME_HEADER: "9" * 400, GATEWAY_SIGNATURE_HEADER: "0x" + "00" * 65},  # overflows a float
        {GATEWAY_TIME_HEADER: now, GATEWAY_SIGNATURE_HEADER: "0x" + "00" * 65},  # 65 bytes, no signature
        {GATEWAY_TIME_HEADER: now, GATEWAY_SIGNATURE_HEADER: "0x" + "ff" * 65},
        {GATEWAY_TIME_HEADER: now, GATEWAY_SIGNATURE_HEADER: "not hex"},
        {GATEWAY_TIME_HEADER: "-1e9"},
        {},
    ]

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as http:
            return [await http.post("/v1/completions", json=completion(world), headers=h) for h in forged]

    for reply in asyncio.run(send()):
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["type"] == "authentication_error"


def test_a_host_process_survives_the_nesting_attack(world: World, tmp_path: Path) -> None:
    account = world.host_account()
    with host_process(world, account, log_path=tmp_path / "host.log") as (proc, url):
        attack = post(f"{url}/v1/completions", nested_arrays(ATTACK_DEPTH))
        health = httpx.get(f"{url}/health", timeout=30)
        alive = proc.poll() is None

    assert attack.status_code == 400 and attack.json() == {"error": DEEP_ERROR}
    assert alive and health.status_code == 200


class _HostileHost:
    """A registered host that answers every completion with JSON nested 100,000 deep (whole or as a stream)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = b""
        while True:
            message = await receive()
            request += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/health":
            body, kind = b'{"status": "ok"}', b"application/json"
        elif b'"stream":true' in request:
            body, kind = b"data: " + nested_arrays(ATTACK_DEPTH) + b"\n\n", b"text/event-stream"
        else:
            body, kind = nested_arrays(ATTACK_DEPTH), b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})


def test_a_host_answering_deeply_nested_json_is_failed_over_not_fatal(world: World, tmp_path: Path) -> None:
    registry = HostRegistryClient(world.chain, world.registry.address)
    hostile: LocalAccount = world.host_account()
    config = GatewayConfig(
        settlement="free",
        arena=world.arena.address,
        registry=world.registry.address,
        spot_check_rate=0.0,
        health_interval_s=0.2,
        host_refresh_interval_s=0.2,
    )
    with serve_in_thread(_HostileHost()) as host_url:
        registry.register(hostile, world.model_id, host_url, HOST_PRICE_PER_1K)
        try:
            gateway = build_gateway(
                world.chain, world.deployment, world.store, world.gateway_account, config, data_dir=tmp_path
            )
            with serve_in_thread(gateway.app) as url:
                _wait_healthy(url, hostile.address)
                whole = httpx.post(f"{url}/v1/completions", json=completion(world), timeout=60)
                _wait_healthy(url, hostile.address)
                streamed = httpx.post(f"{url}/v1/completions", json=completion(world, stream=True), timeout=60)
                health = httpx.get(f"{url}/health", timeout=30)
        finally:
            registry.deregister(hostile)

    for reply in (whole, streamed):
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "no_host_available"
    assert health.status_code == 200


def _wait_healthy(url: str, host: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hosts = httpx.get(f"{url}/health", timeout=10).json().get("hosts", [])
        if any(h["host"] == host and h["healthy"] for h in hosts):
            return
        time.sleep(0.1)
    raise AssertionError(f"host {host} never became healthy at {url}")
