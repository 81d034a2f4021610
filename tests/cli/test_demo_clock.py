"""After `covey demo` the chain clock follows wall time, so the official x402 clients pay a gateway on that chain.

The official x402 client signs `validBefore = now + maxTimeoutSeconds` from wall time: a chain clock moved
ahead (time travel) refuses every such payment as expired. Here everything runs as a user runs it: `covey
demo` in a fresh data directory, then `covey chain serve` and `covey gateway serve` as processes on the
demo's chain, and the SDK's own clients (sync requests, and openai over httpx) with their default validity
window pay for chat completions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from covey.chain import Chain
from covey.gateway.x402.encoding import decode_payment_required, decode_payment_response
from covey.ml import load_dataset
from tests.support import free_port, wait_for_rpc

pytestmark = pytest.mark.e2e

CLOCK_TOLERANCE_S = 60
LOCAL_PRICE_USD = "0.02"  # per 1,000 tokens, generated in the gateway's own process
MAX_TOKENS = 8


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    return {**env, "COVEY_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def covey(home: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`covey ARGS...` in its own process, as a user runs it; a failure shows its output."""
    done = subprocess.run(
        [sys.executable, "-m", "covey.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"covey {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@contextmanager
def serving(home: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`covey ARGS...` as a long-running process, stopped (SIGINT, then kill) when the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "covey.cli", *args], env=_env(home), stdout=out, stderr=subprocess.STDOUT
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


def wait_for_gateway(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the gateway exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the gateway did not answer within {timeout_s:.0f}s:\n{log.read_text()[-3000:]}")


def question(model: dict[str, str]) -> str:
    """A prompt the model answers: words for a language model, an example's features for a classifier."""
    if model["kind"] == "text":
        return "Who art thou?"
    example = load_dataset(model["dataset"]).inputs[-1]
    return " ".join(f"{value:.3f}" for value in example.reshape(-1))


def price_of(url: str, body: dict[str, object]) -> int:
    """What one request costs, from the gateway's own 402 answer (atomic USD units)."""
    refused = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert refused.status_code == 402
    requirements = decode_payment_required(refused.headers["PAYMENT-REQUIRED"]).accepts
    assert len(requirements) == 1
    return int(requirements[0].amount)


def pay_with_requests(url: str, payer: LocalAccount, chain_id: int, token: str, body: dict[str, object]) -> str:
    """The SDK's sync client: `x402ClientSync` + `ExactEvmScheme` on a requests session; returns the tx hash."""
    from x402 import x402ClientSync
    from x402.http.clients import x402_requests
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    network = f"eip155:{chain_id}"
    client = x402ClientSync()
    client.register(network, ExactEvmScheme(EthAccountSigner(payer)))
    client.set_spend_controls({"allowed_assets": [{"network": network, "asset": token}]})
    with x402_requests(client) as session:
        reply = session.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    return str(decode_payment_response(reply.headers["PAYMENT-RESPONSE"]).transaction)


async def pay_with_openai(url: str, payer: LocalAccount, chain_id: int, token: str, body: dict[str, object]) -> str:
    """The official openai client over the SDK's `x402HttpxClient`; returns the settlement's tx hash."""
    from openai import AsyncOpenAI
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    network = f"eip155:{chain_id}"
    client = x402Client()
    client.register(network, ExactEvmScheme(EthAccountSigner(payer)))
    client.set_spend_controls({"allowed_assets": [{"network": network, "asset": token}]})
    async with x402HttpxClient(client, timeout=120) as http:
        openai = AsyncOpenAI(base_url=f"{url}/v1", api_key="paid-with-x402", http_client=http, max_retries=0)
        raw = await openai.chat.completions.with_raw_response.create(**body)  # type: ignore[call-overload]
    reply = raw.parse()
    assert reply.choices[0].message.role == "assistant"
    return str(decode_payment_response(raw.headers["PAYMENT-RESPONSE"]).transaction)


@pytest.mark.timeout(1200)
def test_after_the_demo_the_clock_is_honest_and_the_official_x402_clients_pay(covey_home: Path, tmp_path: Path) -> None:
    covey(covey_home, "demo", timeout_s=900)

    info = json.loads(covey(covey_home, "chain", "info", "--json").stdout)
    assert abs(info["timestamp"] - time.time()) <= CLOCK_TOLERANCE_S, info
    assert abs(info["clockOffsetS"]) <= CLOCK_TOLERANCE_S and info["clockWarning"] is None, info

    rpc_port, gateway_port = free_port(), free_port()
    rpc_url, gateway_url = f"http://127.0.0.1:{rpc_port}", f"http://127.0.0.1:{gateway_port}"
    with serving(covey_home, tmp_path / "chain.log", "chain", "serve", "--port", str(rpc_port)):
        wait_for_rpc(rpc_url, timeout_s=60)
        payer: LocalAccount = Account.create()
        covey(covey_home, "wallet", "faucet", payer.address)
        gateway_log = tmp_path / "gateway.log"
        # No --from and no COVEY_KEY: on a local chain the gateway signs with its own dev account.
        gateway_args = ["gateway", "serve", "--port", str(gateway_port), "--local-price", LOCAL_PRICE_USD]
        with serving(covey_home, gateway_log, *gateway_args) as gateway:
            wait_for_gateway(gateway_url, gateway, gateway_log)
            assert "dev5" in " ".join(gateway_log.read_text().split())
            chain = Chain.from_rpc(rpc_url)
            manifest = json.loads((covey_home / "deployments" / f"{chain.chain_id}.json").read_text())
            token = manifest["contracts"]["USDToken"]
            usd = chain.contract("USDToken", token)
            model = httpx.get(f"{gateway_url}/v1/models", timeout=30).json()["data"][0]
            body: dict[str, object] = {
                "model": model["id"],
                "messages": [{"role": "user", "content": question(model["covey"])}],
                "max_tokens": MAX_TOKENS,
            }
            price = price_of(gateway_url, body)
            assert price > 0

            before = int(usd.functions.balanceOf(payer.address).call())
            tx_sync = pay_with_requests(gateway_url, payer, chain.chain_id, token, body)
            after_sync = int(usd.functions.balanceOf(payer.address).call())
            tx_openai = asyncio.run(pay_with_openai(gateway_url, payer, chain.chain_id, token, body))
            after_openai = int(usd.functions.balanceOf(payer.address).call())

    assert before - after_sync == price
    assert after_sync - after_openai == price
    assert tx_sync != tx_openai
