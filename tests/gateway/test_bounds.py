"""The facilitator and paid routes bound what they parse: a hostile body or payment header is refused, not fatal."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from covey.gateway import ExactEvmFacilitator, create_facilitator_app
from covey.gateway.x402.encoding import (
    PAYMENT_SIGNATURE_HEADER,
    decode_payment_payload,
    decode_payment_required,
    encode_header,
)
from covey.gateway.x402.errors import FacilitatorUnavailableError, MalformedPaymentError
from covey.gateway.x402.facilitator_app import MAX_BODY_BYTES
from covey.gateway.x402.facilitator_client import HttpFacilitatorClient
from tests.untrusted import ATTACK_DEPTH, covey_serve, nested_arrays, nested_in_object
from tests.x402_scaffolding.client import ExactEvmClient
from tests.x402_scaffolding.demo_app import create_demo_app

from .conftest import Money, serve_in_thread

DEEP_BUT_SMALL = 20_000  # 40 KB: under the facilitator's size bound, so only the depth check can refuse it


@pytest.fixture
def facilitator_url(money: Money) -> Iterator[str]:
    with serve_in_thread(create_facilitator_app(ExactEvmFacilitator(money.chain, money.facilitator))) as url:
        yield url


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30)


def test_the_facilitator_refuses_the_nesting_attack_and_keeps_serving(facilitator_url: str) -> None:
    attack = post(f"{facilitator_url}/verify", nested_arrays(ATTACK_DEPTH))
    deep = post(f"{facilitator_url}/settle", nested_in_object("paymentPayload", DEEP_BUT_SMALL))

    assert attack.status_code == 413
    assert attack.json() == {"error": f"the request body is 200,000 bytes; the limit is {MAX_BODY_BYTES:,}"}
    assert deep.status_code == 400
    assert deep.json() == {"error": "request body nests more than 64 levels deep"}
    assert httpx.get(f"{facilitator_url}/supported", timeout=30).status_code == 200


def test_the_facilitator_refuses_a_chunked_body_once_it_outgrows_the_bound(facilitator_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):  # 200 KB with no Content-Length: only counting while reading can stop it
            yield b" " * 1024

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(f"{facilitator_url}/verify", content=chunks())

    reply = asyncio.run(send())

    assert reply.status_code == 413 and "more than" in reply.json()["error"]


def test_the_facilitator_answers_malformed_bodies_with_400_not_500(facilitator_url: str) -> None:
    for body in (b"{", b"[]", b'{"x402Version": ' + b"9" * 5000 + b"}", b"\xff\xfe", b'"' + b"\\" * 3 + b'"'):
        reply = post(f"{facilitator_url}/verify", body)
        assert reply.status_code == 400, body[:20]
        assert reply.json() == {"error": "the body must be a JSON object"}


def test_a_deeply_nested_payment_header_is_refused_as_malformed(money: Money) -> None:
    header = base64.b64encode(nested_in_object("accepted", 5_000)).decode()  # 13 KB: under the header bound
    with pytest.raises(MalformedPaymentError, match="nests more than 64 levels deep"):
        decode_payment_payload(header)

    with serve_in_thread(create_demo_app(money.chain, money.usd.address, money.payee, money.facilitator)) as url:
        reply = httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
        payer = money.fund()
        requirements = decode_payment_required(httpx.get(f"{url}/paid", timeout=30).headers["PAYMENT-REQUIRED"])
        paid = httpx.get(
            f"{url}/paid",
            headers={PAYMENT_SIGNATURE_HEADER: encode_header(ExactEvmClient(payer).pay(requirements.accepts[0]))},
            timeout=30,
        )

    assert reply.status_code == 400
    assert "x402 header nests more than 64 levels deep" in reply.json()["error"]
    assert paid.status_code == 200  # the server lived on


def test_a_server_refuses_to_start_when_the_recursion_limit_was_raised(money: Money) -> None:
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # what importing py_ecc did: deep input would overflow the C stack
    try:
        with pytest.raises(RuntimeError, match="recursion limit is 100,000"):
            create_facilitator_app(ExactEvmFacilitator(money.chain, money.facilitator))
    finally:
        sys.setrecursionlimit(before)


def test_covey_facilitator_serve_survives_the_nesting_attack(covey_home: Path, tmp_path: Path) -> None:
    args = ["facilitator", "serve", "--from", "dev2"]
    with covey_serve(args, env={}, ready_path="/supported", log_path=tmp_path / "facilitator.log") as (url, proc):
        attack = post(f"{url}/verify", nested_arrays(ATTACK_DEPTH))
        deep = post(f"{url}/settle", nested_in_object("paymentPayload", DEEP_BUT_SMALL))
        supported = httpx.get(f"{url}/supported", timeout=30)
        alive = proc.poll() is None

    assert (attack.status_code, deep.status_code) == (413, 400)
    assert "nests more than 64 levels deep" in deep.json()["error"]
    assert alive and supported.status_code == 200


async def _hostile_facilitator(scope: Scope, receive: Receive, send: Send) -> None:
    """A remote "facilitator" that answers everything with arrays nested 20,000 deep (40 KB)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": nested_arrays(DEEP_BUT_SMALL)})


def test_a_remote_facilitators_nested_answer_is_refused_not_parsed() -> None:
    async def ask(url: str) -> None:
        client = HttpFacilitatorClient(url, timeout_s=30)
        try:
            await client.supported()
        finally:
            await client.aclose()

    with serve_in_thread(_hostile_facilitator) as url, pytest.raises(FacilitatorUnavailableError) as refused:
        asyncio.run(ask(url))

    assert "answered outside the x402 schema: the answer nests more than 64 levels deep" in str(refused.value)
