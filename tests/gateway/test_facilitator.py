"""The facilitator over HTTP: `/verify`, `/settle`, `/supported` as the x402 v2 spec shapes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from covey.gateway import (
    ExactEvmFacilitator,
    ExactEvmServer,
    HttpFacilitatorClient,
    Reason,
    create_facilitator_app,
)
from covey.gateway.x402.encoding import encode_header
from covey.gateway.x402.types import PaymentRequirements, SettleResponse, VerifyResponse
from tests.x402_scaffolding.client import ExactEvmClient
from tests.x402_scaffolding.demo_app import create_demo_app

from .conftest import Money, serve_in_thread

PRICE = 25_000


@dataclass
class Remote:
    url: str
    money: Money
    requirements: PaymentRequirements

    def verify(self, body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/verify", json=body, timeout=30)

    def settle(self, body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/settle", json=body, timeout=60)


@pytest.fixture
def remote(money: Money) -> Iterator[Remote]:
    app = create_facilitator_app(ExactEvmFacilitator(money.chain, money.facilitator))
    requirements = ExactEvmServer(money.chain, money.usd.address, money.payee).requirements(PRICE)
    with serve_in_thread(app) as url:
        yield Remote(url, money, requirements)


def body(payload: object, requirements: PaymentRequirements) -> dict[str, object]:
    wire = payload.to_wire() if hasattr(payload, "to_wire") else payload
    return {"x402Version": 2, "paymentPayload": wire, "paymentRequirements": requirements.to_wire()}


def test_supported_names_the_chain_and_the_gas_payer(remote: Remote) -> None:
    reply = httpx.get(f"{remote.url}/supported", timeout=10)

    assert reply.status_code == 200
    assert reply.json() == {
        "kinds": [{"x402Version": 2, "scheme": "exact", "network": f"eip155:{remote.money.chain.chain_id}"}],
        "extensions": [],
        "signers": {"eip155:*": [remote.money.facilitator.address]},
    }


def test_verify_then_settle_moves_the_money_once(remote: Remote) -> None:
    money, req = remote.money, remote.requirements
    payer = money.fund()
    payload = ExactEvmClient(payer).pay(req)

    verified = remote.verify(body(payload, req))
    settled = [remote.settle(body(payload, req)) for _ in range(2)]

    assert verified.status_code == 200 and verified.json() == {"isValid": True, "payer": payer.address}
    first, again = (SettleResponse.model_validate(reply.json()) for reply in settled)
    assert first.success and first.transaction.startswith("0x") and first.payer == payer.address
    assert again == first  # idempotent: the same transaction, not a second transfer
    assert money.balance(money.payee) == PRICE
    assert remote.verify(body(payload, req)).json()["invalidReason"] == Reason.NONCE_ALREADY_USED


def test_invalid_payments_answer_200_with_the_spec_reason(remote: Remote) -> None:
    money, req = remote.money, remote.requirements
    payer, broke = money.fund(), money.fund(0)
    client, now = ExactEvmClient(payer), int(time.time())
    cases = {
        Reason.INVALID_SIGNATURE: client.pay(req, chain_id=1),
        Reason.VALUE_MISMATCH: client.pay(req, value=PRICE * 2),
        Reason.RECIPIENT_MISMATCH: client.pay(req, pay_to=money.deployer.address),
        Reason.VALID_BEFORE: client.pay(req, valid_before=now - 10),
        Reason.VALID_AFTER: client.pay(req, valid_after=now + 60),
        Reason.INSUFFICIENT_FUNDS: ExactEvmClient(broke).pay(req),
        Reason.INVALID_NETWORK: client.pay(req.model_copy(update={"network": "eip155:8453"})),
    }
    for reason, payload in cases.items():
        verified, settled = remote.verify(body(payload, req)), remote.settle(body(payload, req))
        assert verified.status_code == settled.status_code == 200, reason
        verdict = VerifyResponse.model_validate(verified.json())
        assert not verdict.is_valid and verdict.invalid_reason == reason
        assert verdict.payer == (broke if reason == Reason.INSUFFICIENT_FUNDS else payer).address
        outcome = SettleResponse.model_validate(settled.json())
        assert not outcome.success and outcome.error_reason == reason and outcome.transaction == "", reason
    assert money.balance(money.payee) == 0


def test_malformed_requests(remote: Remote) -> None:
    req = remote.requirements
    payload = ExactEvmClient(remote.money.fund(0)).pay(req).to_wire()
    no_signature = {**payload, "payload": {"authorization": payload["payload"]["authorization"]}}

    assert httpx.post(f"{remote.url}/verify", content=b"[1, 2", timeout=10).status_code == 400
    reasons = {
        Reason.INVALID_PAYLOAD: body({"x402Version": 2}, req),
        Reason.INVALID_PAYMENT_REQUIREMENTS: {**body(payload, req), "paymentRequirements": {"scheme": "exact"}},
        Reason.INVALID_X402_VERSION: {**body(payload, req), "x402Version": 1},
        Reason.INVALID_SIGNATURE: body(no_signature, req),
        Reason.UNSUPPORTED_SCHEME: body(payload, req.model_copy(update={"scheme": "upto"})),
    }
    for reason, request in reasons.items():
        reply = remote.verify(request)
        assert reply.status_code == 200 and reply.json()["isValid"] is False
        assert reply.json()["invalidReason"] == reason
        settled = remote.settle(request).json()
        assert settled["success"] is False and settled["errorReason"] == reason and settled["transaction"] == ""


def test_a_restarted_facilitator_answers_a_repeated_settle_from_the_chain(money: Money) -> None:
    req = ExactEvmServer(money.chain, money.usd.address, money.payee).requirements(PRICE)
    payer = money.fund()
    payload = ExactEvmClient(payer).pay(req)
    first = ExactEvmFacilitator(money.chain, money.facilitator).settle(payload, req)

    restarted = ExactEvmFacilitator(money.chain, money.facilitator)  # no memory of the first settle
    again = restarted.settle(payload, req)
    reused = ExactEvmClient(payer).pay(req, nonce=bytes.fromhex(payload.payload["authorization"]["nonce"][2:]))

    assert first.success and again == first
    assert restarted.verify(reused, req).invalid_reason == Reason.NONCE_ALREADY_USED
    assert money.balance(money.payee) == PRICE


def test_concurrent_settles_of_one_authorisation_send_one_transaction(money: Money) -> None:
    facilitator = ExactEvmFacilitator(money.chain, money.facilitator)
    req = ExactEvmServer(money.chain, money.usd.address, money.payee).requirements(PRICE)
    payload = ExactEvmClient(money.fund()).pay(req)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: facilitator.settle(payload, req), range(4)))

    assert all(r.success for r in results) and len({r.transaction for r in results}) == 1
    assert money.balance(money.payee) == PRICE


def test_a_gateway_can_use_a_remote_facilitator(remote: Remote) -> None:
    money = remote.money
    payer = money.fund()
    demo = create_demo_app(
        money.chain, money.usd.address, money.payee, money.facilitator, price_atomic=PRICE, facilitator_url=remote.url
    )
    with serve_in_thread(demo) as url:
        payload = ExactEvmClient(payer).pay(remote.requirements)
        reply = httpx.get(f"{url}/paid", headers={"PAYMENT-SIGNATURE": encode_header(payload)}, timeout=60)

    assert reply.status_code == 200, reply.text
    assert money.balance(money.payee) == PRICE


def test_the_http_client_raises_when_the_facilitator_is_down() -> None:
    from covey.gateway.x402.errors import FacilitatorUnavailableError

    async def ask() -> None:
        client = HttpFacilitatorClient("http://127.0.0.1:9", timeout_s=2)
        try:
            await client.supported()
        finally:
            await client.aclose()

    with pytest.raises(FacilitatorUnavailableError):
        asyncio.run(ask())
