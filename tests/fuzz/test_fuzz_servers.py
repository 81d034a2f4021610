"""Property-based fuzzing of every Covey server as a running process: no 5xx, no dead process.

One shared network per module: `covey chain serve` with the suite deployed, and `covey gateway serve`,
`covey facilitator serve` and `covey explorer serve` on it, each its own process on 127.0.0.1. Hypothesis
sends them JSON-RPC requests, bodies and headers an attacker might (wrong types, deep nesting, garbage
bytes, hostile payment headers); every answer must be a client error or a success, never a server error
or a dropped connection, and every process must still be alive and answering at the end. Each target is
bounded by its example count, so the module runs in about a minute.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import REPO_ROOT, free_port, wait_for_rpc
from tests.untrusted import covey_serve

pytestmark = pytest.mark.e2e

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["0x", "0x0", "0x1", "latest", "pending", "0x" + "ff" * 20, "0x" + "00" * 32, "-0x1", "0xzz"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20,
)

RPC_METHODS = [
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_call",
    "eth_estimateGas",
    "eth_sendRawTransaction",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getLogs",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_getFilterChanges",
    "eth_uninstallFilter",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_getStorageAt",
    "net_version",
    "web3_clientVersion",
    "evm_mine",
    "evm_snapshot",
    "evm_revert",
]

rpc_requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.one_of(st.just("2.0"), json_scalars),
        "method": st.one_of(st.sampled_from(RPC_METHODS), st.text(max_size=20)),
        "params": st.one_of(st.lists(json_values, max_size=4), json_values),
        "id": st.one_of(st.integers(), st.text(max_size=8), st.none()),
    }
)
rpc_bodies = st.one_of(
    rpc_requests.map(json.dumps),
    st.lists(rpc_requests, max_size=4).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.integers(min_value=1, max_value=5_000).map(lambda depth: "[" * depth + "]" * depth),
)

# Header values may carry any byte but controls (h11 refuses those before they leave the client).
header_bytes = st.binary(max_size=80).map(lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F))
payment_headers = st.one_of(
    header_bytes,
    json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.fixed_dictionaries(
        {
            "x402Version": st.one_of(st.just(2), json_scalars),
            "accepted": json_values,
            "payload": st.one_of(
                json_values,
                st.fixed_dictionaries({"signature": json_scalars, "authorization": json_values}),
            ),
        }
    ).map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
)
http_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.text(max_size=20), json_scalars),
            "messages": st.one_of(
                st.lists(st.fixed_dictionaries({"role": json_scalars, "content": json_values}), max_size=3),
                json_values,
            ),
            "max_tokens": json_scalars,
            "stream": json_scalars,
        }
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.integers(min_value=1, max_value=5_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@dataclass
class Network:
    """The running processes: a served chain with the suite, and the HTTP servers on it."""

    rpc_url: str
    chain: subprocess.Popen[bytes]
    servers: dict[str, tuple[str, subprocess.Popen[bytes]]]


def _env(home: Path, rpc_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env["COVEY_HOME"] = str(home)
    if rpc_url:
        env["COVEY_RPC_URL"] = rpc_url
    return env


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    home = tmp_path_factory.mktemp("fuzz-home")
    port = free_port()
    log = open(home / "chain.log", "ab")  # noqa: SIM115 - closed with the process below
    chain = subprocess.Popen(
        [sys.executable, "-m", "covey.cli", "chain", "serve", "--port", str(port)],
        env=_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    rpc_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(rpc_url, timeout_s=120)
        deployed = subprocess.run(
            [sys.executable, "-m", "covey.cli", "chain", "deploy"],
            env=_env(home, rpc_url),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
        )
        assert deployed.returncode == 0, deployed.stderr
        env = {"COVEY_HOME": str(home), "COVEY_RPC_URL": rpc_url}
        with (
            covey_serve(
                ["gateway", "serve", "--from", "dev5", "--local-price", "0.01"],
                env=env,
                ready_path="/health",
                log_path=home / "gateway.log",
            ) as gateway,
            covey_serve(
                ["facilitator", "serve", "--from", "dev6"],
                env=env,
                ready_path="/supported",
                log_path=home / "facilitator.log",
            ) as facilitator,
            covey_serve(["explorer", "serve"], env=env, ready_path="/", log_path=home / "explorer.log") as explorer,
        ):
            yield Network(rpc_url, chain, {"gateway": gateway, "facilitator": facilitator, "explorer": explorer})
    finally:
        chain.terminate()
        try:
            chain.wait(timeout=10)
        except subprocess.TimeoutExpired:
            chain.kill()
            chain.wait()
        log.close()


def assert_alive(network: Network) -> None:
    """Every process still runs and answers a plain request."""
    assert network.chain.poll() is None, "the chain server died"
    reply = httpx.post(network.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=10)
    assert reply.status_code == 200 and "result" in reply.json()
    for name, (url, process) in network.servers.items():
        assert process.poll() is None, f"{name} died"
        assert httpx.get(url + ("/supported" if name == "facilitator" else "/"), timeout=10).status_code < 500


def test_the_chain_server_answers_every_request_with_json_rpc(network: Network) -> None:
    with httpx.Client(timeout=30) as client:

        @FUZZ
        @given(body=rpc_bodies)
        def send(body: str) -> None:
            reply = client.post(network.rpc_url, content=body.encode(), headers={"content-type": "application/json"})
            assert reply.status_code < 500, f"{reply.status_code} for {body[:200]!r}"
            answer = reply.json()
            answers = answer if isinstance(answer, list) else [answer]
            for one in answers:
                assert one.get("jsonrpc") == "2.0" and ("result" in one or "error" in one), answer

        send()
    assert_alive(network)


ROUTES = {
    "gateway": [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/covey-arena-1"),
        ("GET", "/health"),
    ],
    "facilitator": [("POST", "/verify"), ("POST", "/settle"), ("GET", "/supported")],
    "explorer": [
        ("GET", "/"),
        ("GET", "/arena/tasks/1"),
        ("GET", "/alliance/1"),
        ("GET", "/compute/jobs/1"),
        ("GET", "/accounts/0x" + "ab" * 20),
        ("GET", "/tx/0x" + "cd" * 32),
        ("GET", "/events"),
        ("GET", "/search"),
        ("GET", "/api/status"),
        ("GET", "/api/accounts/0x" + "ab" * 20),
    ],
}


@pytest.mark.parametrize("server", sorted(ROUTES))
def test_http_servers_never_answer_a_server_error(network: Network, server: str) -> None:
    url, _process = network.servers[server]
    with httpx.Client(timeout=30) as client:

        @FUZZ
        @given(
            route=st.sampled_from(ROUTES[server]),
            body=http_bodies,
            payment=st.one_of(st.none(), payment_headers),
            content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
            query=st.dictionaries(st.sampled_from(["q", "page", "limit", "task", "address"]), st.text(max_size=30)),
        )
        def send(
            route: tuple[str, str], body: bytes, payment: str | bytes | None, content_type: str, query: dict[str, Any]
        ) -> None:
            method, path = route
            headers: dict[str, str | bytes] = {"content-type": content_type} if content_type else {}
            if payment is not None:
                headers["PAYMENT-SIGNATURE"] = payment
                headers["X-PAYMENT"] = payment
            content = body if method == "POST" else None
            reply = client.request(method, url + path, content=content, headers=headers, params=query)
            assert reply.status_code < 500, f"{method} {path}: {reply.status_code} {reply.text[:300]}"

        send()
    assert_alive(network)
