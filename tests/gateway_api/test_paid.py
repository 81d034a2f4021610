"""An agent pays for inference with the official x402 client under the official openai client, unchanged."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from openai import AsyncOpenAI
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner

from covey.gateway.app import PaymentOptions
from covey.gateway.pricing import quote
from covey.gateway.x402.batcher_deploy import deploy_batcher
from covey.gateway.x402.encoding import (
    PAYMENT_SIGNATURE_HEADER,
    decode_payment_required,
    decode_payment_response,
    encode_header,
)
from covey.gateway.x402.errors import Reason
from tests.x402_scaffolding.client import ExactEvmClient

from .conftest import HOST_PRICE_PER_1K, REPO_ROOT, World, local_gateway, serve_in_thread

SUBSIDY_BPS = 5_000


def official_x402(account: LocalAccount, world: World) -> x402Client:
    """The reference SDK's client with the exact EVM scheme for our chain, our token opted in."""
    network = f"eip155:{world.chain.chain_id}"
    client = x402Client()
    client.register(network, ExactEvmScheme(EthAccountSigner(account)))
    client.set_spend_controls({"allowed_assets": [{"network": network, "asset": world.usd.address}]})
    return client


def authorizations(world: World, payer: str) -> list[dict[str, Any]]:
    return [
        dict(e["args"])
        for e in world.usd.events.AuthorizationUsed().get_logs(from_block=0)
        if e["args"]["authorizer"] == payer
    ]


@pytest.fixture(scope="module")
def payee() -> str:
    return str(Account.create().address)


@pytest.fixture(scope="module")
def strict_url(world: World, payee: str) -> Iterator[str]:
    payments = PaymentOptions(world.chain, world.usd.address, payee, world.gateway_account, mode="strict")
    with serve_in_thread(local_gateway(world, payments=payments, subsidy_bps=SUBSIDY_BPS)) as url:
        yield url


def test_a_paid_route_without_payment_answers_402_and_models_stay_free(strict_url: str, world: World) -> None:
    body = {"model": world.model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}

    reply = httpx.post(f"{strict_url}/v1/chat/completions", json=body, timeout=30)

    assert reply.status_code == 402
    required = decode_payment_required(reply.headers["PAYMENT-REQUIRED"])
    (accepts,) = required.accepts
    assert accepts.network == f"eip155:{world.chain.chain_id}" and accepts.asset == world.usd.address
    assert int(accepts.amount) == quote(HOST_PRICE_PER_1K, 20, SUBSIDY_BPS).price_atomic
    assert httpx.get(f"{strict_url}/v1/models", timeout=30).status_code == 200
    bad = httpx.post(f"{strict_url}/v1/chat/completions", json={**body, "temperature": 9}, timeout=30)
    assert bad.status_code == 400  # a request we could not serve is refused before any price is asked


def test_the_agent_pays_the_subsidised_price_once_per_chat(strict_url: str, world: World, payee: str) -> None:
    agent = world.payer()
    payee_before = world.usd_balance(payee)

    async def chat() -> Any:
        async with x402HttpxClient(official_x402(agent, world), timeout=60) as http:
            client = AsyncOpenAI(base_url=f"{strict_url}/v1", api_key="paid-by-x402", http_client=http, max_retries=0)
            return await client.chat.completions.with_raw_response.create(
                model=world.model_id, messages=[{"role": "user", "content": "Who goes there?"}], max_tokens=20
            )

    raw = asyncio.run(chat())

    price = quote(HOST_PRICE_PER_1K, 20, SUBSIDY_BPS)
    assert price.price_atomic < price.host_cost_atomic  # the agent pays less than the host's cost
    receipt = decode_payment_response(raw.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.transaction.startswith("0x") and receipt.payer == agent.address
    assert raw.parse().choices[0].message.content is not None
    assert world.usd_balance(agent.address) == 1_000_000 - price.price_atomic
    assert world.usd_balance(payee) - payee_before == price.price_atomic
    assert len(authorizations(world, agent.address)) == 1


def test_a_paid_stream_is_settled_on_chain_before_its_first_byte(strict_url: str, world: World) -> None:
    agent = world.payer()

    async def stream() -> tuple[str, bool, str]:
        async with x402HttpxClient(official_x402(agent, world), timeout=60) as http:
            client = AsyncOpenAI(base_url=f"{strict_url}/v1", api_key="paid-by-x402", http_client=http, max_retries=0)
            async with client.chat.completions.with_streaming_response.create(
                model=world.model_id, messages=[{"role": "user", "content": "Speak."}], max_tokens=30, stream=True
            ) as response:
                settlement = decode_payment_response(response.headers["PAYMENT-RESPONSE"])
                # Headers are here and no chunk is read yet: the transfer must already be mined.
                mined = world.chain.w3.eth.get_transaction_receipt(settlement.transaction)["status"] == 1
                text = ""
                async for chunk in await response.parse():
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                return settlement.transaction, mined, text

    transaction, mined, text = asyncio.run(stream())

    assert mined and transaction.startswith("0x")
    assert text
    assert len(authorizations(world, agent.address)) == 1


def test_batched_settlement_serves_at_once_and_settles_every_payment_once(
    world: World, payee: str, tmp_path: Path
) -> None:
    batcher = deploy_batcher(world.chain, world.owner)
    payments = PaymentOptions(
        world.chain,
        world.usd.address,
        payee,
        world.gateway_account,
        mode="batched",
        journal_dir=tmp_path,
        batcher=batcher,
        flush_interval_s=0.2,
    )
    agent = world.payer()
    price = quote(HOST_PRICE_PER_1K, 10, 0).price_atomic

    async def ask_three(url: str) -> list[Any]:
        async with x402HttpxClient(official_x402(agent, world), timeout=60) as http:
            client = AsyncOpenAI(base_url=f"{url}/v1", api_key="paid-by-x402", http_client=http, max_retries=0)
            return [
                await client.completions.with_raw_response.create(model=world.model_id, prompt="ROMEO:", max_tokens=10)
                for _ in range(3)
            ]

    with serve_in_thread(local_gateway(world, payments=payments)) as url:
        replies = asyncio.run(ask_three(url))
        assert all(decode_payment_response(r.headers["PAYMENT-RESPONSE"]).success for r in replies)
    # Closing the gateway drains the journal: every accepted payment is on chain, once.

    assert len(authorizations(world, agent.address)) == 3
    assert world.usd_balance(agent.address) == 1_000_000 - 3 * price


def test_a_settled_payment_replayed_after_each_restart_is_refused_and_charged_once(
    world: World, payee: str, tmp_path: Path
) -> None:
    payments = PaymentOptions(
        world.chain,
        world.usd.address,
        payee,
        world.gateway_account,
        mode="batched",
        journal_dir=tmp_path / "journal",
        batcher=deploy_batcher(world.chain, world.owner),
        flush_interval_s=0.2,
    )
    agent = world.payer()
    body = {"model": world.model_id, "prompt": "ROMEO:", "max_tokens": 5}
    with serve_in_thread(local_gateway(world, payments=payments)) as url:
        asked = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        (requirements,) = decode_payment_required(asked.headers["PAYMENT-REQUIRED"]).accepts
        header = {PAYMENT_SIGNATURE_HEADER: encode_header(ExactEvmClient(agent).pay(requirements))}
        assert httpx.post(f"{url}/v1/completions", json=body, headers=header, timeout=60).status_code == 200
    # Closing the gateway drained its journal: the payment is on chain.
    assert len(authorizations(world, agent.address)) == 1

    for _restart in range(2):
        with serve_in_thread(local_gateway(world, payments=payments)) as url:
            replay = httpx.post(f"{url}/v1/completions", json=body, headers=header, timeout=60)
        assert replay.status_code == 402
        assert replay.json()["error"] == Reason.NONCE_ALREADY_USED
    assert world.usd_balance(agent.address) == 1_000_000 - int(requirements.amount)
    assert len(authorizations(world, agent.address)) == 1


def test_the_example_agent_pays_and_prints_the_answer(strict_url: str, world: World) -> None:
    agent = world.payer()
    args = [str(REPO_ROOT / ".venv" / "bin" / "python"), str(REPO_ROOT / "examples" / "agent.py"), "Who goes there?"]
    args += ["--base-url", strict_url, "--chain-id", str(world.chain.chain_id), "--token", world.usd.address]
    env = {**os.environ, "AGENT_PRIVATE_KEY": agent.key.hex()}

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert f"model {world.model_id}" in done.stdout and "payment:" in done.stdout
    assert len(authorizations(world, agent.address)) == 1
