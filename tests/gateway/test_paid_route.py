"""An agent pays `/paid` with the official x402 client; bad payments are refused with the spec's reasons."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner

from covey.chain import Chain
from covey.gateway import Reason
from covey.gateway.x402.encoding import decode_payment_required, decode_payment_response, encode_header
from covey.gateway.x402.types import PaymentPayload, PaymentRequirements
from tests.x402_scaffolding.client import ExactEvmClient
from tests.x402_scaffolding.demo_app import DEMO_PRICE_ATOMIC, create_demo_app

from .conftest import Money, serve_in_thread


@dataclass
class PaidApi:
    url: str
    money: Money

    def requirements(self) -> PaymentRequirements:
        """What `/paid` asks for, read from its 402 the way a client would."""
        reply = httpx.get(f"{self.url}/paid", timeout=10)
        assert reply.status_code == 402
        return decode_payment_required(reply.headers["PAYMENT-REQUIRED"]).accepts[0]

    def pay(self, payload: PaymentPayload) -> httpx.Response:
        return httpx.get(f"{self.url}/paid", headers={"PAYMENT-SIGNATURE": encode_header(payload)}, timeout=60)


@pytest.fixture
def api(money: Money) -> Iterator[PaidApi]:
    app = create_demo_app(money.chain, money.usd.address, money.payee, money.facilitator)
    with serve_in_thread(app) as url:
        yield PaidApi(url, money)


def official_client(account: LocalAccount, chain: Chain, token: str) -> x402Client:
    """The reference SDK's client, configured as its docs say: the exact EVM scheme for our chain.

    Its spend controls allow only well-known USDC deployments by default, so a local token is opted in.
    """
    client = x402Client()
    client.register(f"eip155:{chain.chain_id}", ExactEvmScheme(EthAccountSigner(account)))
    client.set_spend_controls({"allowed_assets": [{"network": f"eip155:{chain.chain_id}", "asset": token}]})
    return client


@pytest.mark.parametrize("gw_chain", ["embedded", pytest.param("anvil", marks=pytest.mark.anvil)], indirect=True)
def test_the_official_client_pays_once_and_gets_the_answer(api: PaidApi) -> None:
    money = api.money
    payer = money.fund()

    async def visit() -> httpx.Response:
        async with x402HttpxClient(official_client(payer, money.chain, money.usd.address), timeout=60) as http:
            return await http.get(f"{api.url}/paid")

    reply = asyncio.run(visit())

    assert reply.status_code == 200, reply.text
    assert reply.json()["payer"] == payer.address
    receipt = decode_payment_response(reply.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.transaction.startswith("0x") and receipt.payer == payer.address
    assert receipt.network == f"eip155:{money.chain.chain_id}"
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC
    assert money.balance(payer.address) == 1_000_000 - DEMO_PRICE_ATOMIC
    assert len(money.authorizations_used(payer.address)) == 1


def test_an_unpaid_request_gets_the_requirements_in_header_and_body(api: PaidApi) -> None:
    reply = httpx.get(f"{api.url}/paid", timeout=10)

    assert reply.status_code == 402
    required = decode_payment_required(reply.headers["PAYMENT-REQUIRED"])
    assert reply.json() == required.to_wire()
    assert required.x402_version == 2 and required.resource.url == f"{api.url}/paid"
    (accepts,) = required.accepts
    assert accepts.scheme == "exact" and accepts.network == f"eip155:{api.money.chain.chain_id}"
    assert accepts.amount == str(DEMO_PRICE_ATOMIC) and accepts.asset == api.money.usd.address
    assert accepts.extra == {"name": "Covey USD", "version": "2"}  # the token's own EIP-712 domain
    assert httpx.get(f"{api.url}/free", timeout=10).status_code == 200


@pytest.mark.parametrize("header", ["not base64 at all!", "eyJub3QiOiAianNvbiJ9", "e30="])
def test_a_malformed_payment_header_is_a_bad_request(api: PaidApi, header: str) -> None:
    reply = httpx.get(f"{api.url}/paid", headers={"PAYMENT-SIGNATURE": header}, timeout=10)

    assert reply.status_code == 400
    assert reply.json()["error"]


def test_a_malformed_authorization_is_a_bad_request(api: PaidApi) -> None:
    payload = ExactEvmClient(api.money.fund(0)).pay(api.requirements())
    payload.payload["authorization"]["value"] = "-5"

    assert api.pay(payload).status_code == 400


def _bad_payments(api: PaidApi, payer: LocalAccount) -> dict[str, tuple[PaymentPayload, str]]:
    """Each way a payment can be wrong, with the reason the gateway must give."""
    money, client = api.money, ExactEvmClient(payer)
    req = api.requirements()
    other_token = money.chain.deploy("USDToken", sender=money.deployer).address
    now = int(time.time())
    used = client.pay(req)
    assert api.pay(used).status_code == 200  # spend it once, so its nonce is used on chain
    return {
        "bad signature": (client.pay(req, domain_name="USD Coin"), Reason.INVALID_SIGNATURE),
        "wrong amount": (client.pay(req, value=DEMO_PRICE_ATOMIC - 1), Reason.VALUE_MISMATCH),
        "wrong amount accepted": (client.pay(req.model_copy(update={"amount": "1"})), Reason.VALUE_MISMATCH),
        "wrong asset": (client.pay(req.model_copy(update={"asset": other_token})), Reason.ASSET_MISMATCH),
        "wrong network": (client.pay(req.model_copy(update={"network": "eip155:1"})), Reason.INVALID_NETWORK),
        "wrong payTo": (client.pay(req, pay_to=money.deployer.address), Reason.RECIPIENT_MISMATCH),
        "wrong payTo accepted": (
            client.pay(req.model_copy(update={"pay_to": money.deployer.address})),
            Reason.RECIPIENT_MISMATCH,
        ),
        "expired": (client.pay(req, valid_after=now - 600, valid_before=now - 1), Reason.VALID_BEFORE),
        "expiring too soon": (client.pay(req, valid_before=now + 20), Reason.VALID_BEFORE),
        "not yet valid": (client.pay(req, valid_after=now + 300, valid_before=now + 900), Reason.VALID_AFTER),
        # A new signature over a spent nonce (an identical payload would be a retry, answered by replay).
        "nonce already used": (
            client.pay(req, nonce=bytes.fromhex(used.payload["authorization"]["nonce"][2:]), valid_before=now + 500),
            Reason.NONCE_ALREADY_USED,
        ),
    }


def test_every_bad_payment_is_refused_with_its_reason_and_nothing_moves(api: PaidApi) -> None:
    money = api.money
    payer = money.fund(DEMO_PRICE_ATOMIC * 3)
    cases = _bad_payments(api, payer)
    broke = ExactEvmClient(money.fund(DEMO_PRICE_ATOMIC - 1))
    cases["insufficient balance"] = (broke.pay(api.requirements()), Reason.INSUFFICIENT_FUNDS)
    payee_before, payer_before = money.balance(money.payee), money.balance(payer.address)

    for name, (payload, reason) in cases.items():
        reply = api.pay(payload)
        assert reply.status_code == 402, name
        assert reply.json()["error"] == reason, (name, reply.json()["error"])
        assert decode_payment_required(reply.headers["PAYMENT-REQUIRED"]).error == reason, name
        assert "PAYMENT-RESPONSE" not in reply.headers, name

    assert money.balance(money.payee) == payee_before
    assert money.balance(payer.address) == payer_before
    assert len(money.authorizations_used()) == 1  # only the payment spent on purpose above


def test_the_same_authorisation_sent_twice_concurrently_is_paid_once(api: PaidApi) -> None:
    money = api.money
    payer = money.fund()
    header = encode_header(ExactEvmClient(payer).pay(api.requirements()))

    async def twice() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            send = [http.get(f"{api.url}/paid", headers={"PAYMENT-SIGNATURE": header}) for _ in range(2)]
            return list(await asyncio.gather(*send))

    first, second = asyncio.run(twice())

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()  # the second is the first answer replayed, not a second serving
    assert first.headers["PAYMENT-RESPONSE"] == second.headers["PAYMENT-RESPONSE"]
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC
    assert len(money.authorizations_used(payer.address)) == 1


def test_a_retry_is_answered_again_without_a_second_charge(api: PaidApi) -> None:
    money = api.money
    payer = money.fund()
    payload = ExactEvmClient(payer).pay(api.requirements())

    first = api.pay(payload)
    retry = api.pay(payload)
    elsewhere = httpx.post(f"{api.url}/paid", headers={"PAYMENT-SIGNATURE": encode_header(payload)}, timeout=10)

    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json() and retry.headers["PAYMENT-RESPONSE"] == first.headers["PAYMENT-RESPONSE"]
    assert elsewhere.status_code == 402  # the same payment for a different request buys nothing more
    assert elsewhere.json()["error"] == Reason.NONCE_ALREADY_USED
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC
    assert len(money.authorizations_used(payer.address)) == 1


def test_a_random_nonce_does_not_collide(api: PaidApi) -> None:
    # Two payments by one payer differ only by their nonces; both are charged.
    money = api.money
    payer = money.fund()
    client = ExactEvmClient(payer)
    for _ in range(2):
        assert api.pay(client.pay(api.requirements(), nonce=os.urandom(32))).status_code == 200
    assert money.balance(money.payee) == 2 * DEMO_PRICE_ATOMIC
