"""SIGKILL `covey gateway serve` under paid load, strict and batched: every answer paid once, and it resumes.

Six agents pay for completions with x402 (EIP-3009 authorisations, each with a fresh random nonce) as fast
as the gateway answers. Mid-load the gateway is killed with SIGKILL and started again with the same
settings (and, batched, the same journal). Then, on chain:

- every answer an agent received (200) was paid exactly once: its authorisation is used, once;
- nothing was settled twice, and nothing that was never sent;
- the only payments settled without an answer reaching the agent are requests that were in flight when
  the gateway died. x402 allows that in strict mode: settlement comes before the answer, so a crash
  between the two leaves a payment settled and its answer lost. Batched mode journals a payment before
  answering, so a restart settles it although the agent never saw the answer. Either way the agent's
  retry with the same payment is refused as a used nonce (the gateway's memory of answers died with
  it): it is never charged twice, and it is bounded by the requests in flight at the kill;
- balances add up: each payer lost exactly the price of its settled payments, and the payee got them;
- the restarted gateway answers new paid requests and settles them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from covey.gateway import deploy_batcher
from covey.gateway.x402.encoding import decode_payment_required, decode_payment_response, encode_header
from covey.gateway.x402.journal import PaymentJournal
from covey.gateway.x402.types import PaymentPayload, PaymentRequirements
from tests.x402_scaffolding.client import ExactEvmClient

from .conftest import World, gateway_process, wait_for

pytestmark = pytest.mark.e2e

WORKERS = 6
PAYERS = 3
SERVED_BEFORE_KILL = 30
MAX_REQUESTS_PER_WORKER = 500
LOAD_TIMEOUT_S = 120.0
LOCAL_PRICE = "0.02"  # USD per 1,000 tokens: the gateway generates in process, no hosts involved
PAID = "PAYMENT-SIGNATURE"

Key = tuple[str, str]
"""A payment's identity: (payer, EIP-3009 nonce as 0x-hex)."""


@dataclass
class Load:
    """What the agents saw: payments sent, answered (200), and those whose request got no answer at all."""

    sent: dict[Key, PaymentPayload] = field(default_factory=dict)
    served: set[Key] = field(default_factory=set)
    unanswered: set[Key] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)


def key_of(payload: PaymentPayload) -> Key:
    authorization = payload.payload["authorization"]
    return str(authorization["from"]), str(authorization["nonce"]).lower()


def completion_body(world: World) -> dict[str, Any]:
    return {"model": world.model_id, "prompt": "ROMEO:", "max_tokens": 8, "temperature": 0}


def requirements_of(url: str, body: dict[str, Any]) -> PaymentRequirements:
    reply = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
    assert reply.status_code == 402, reply.text
    return decode_payment_required(reply.headers["PAYMENT-REQUIRED"]).accepts[0]


def agent(
    url: str,
    body: dict[str, Any],
    requirements: PaymentRequirements,
    payer: LocalAccount,
    load: Load,
    stop: threading.Event,
) -> None:
    """Pay for one completion after another until stopped, refused, or the gateway goes away."""
    client = ExactEvmClient(payer)
    with httpx.Client(timeout=60) as http:
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if stop.is_set():
                return
            payment = client.pay(requirements)
            key = key_of(payment)
            load.sent[key] = payment  # from here on it may be settled
            try:
                reply = http.post(f"{url}/v1/completions", json=body, headers={PAID: encode_header(payment)})
            except httpx.HTTPError:
                load.unanswered.add(key)  # the gateway died with this request: paid or not, unknown to the agent
                return
            if reply.status_code != 200:
                load.refused.append(f"{reply.status_code}: {reply.text[:300]}")
                return
            assert decode_payment_response(reply.headers["PAYMENT-RESPONSE"]).success
            load.served.add(key)


def settled_on_chain(world: World, payers: list[LocalAccount]) -> list[Key]:
    """Every used authorisation of these payers, one entry per `AuthorizationUsed` event."""
    mine = {payer.address for payer in payers}
    events = world.usd.events.AuthorizationUsed().get_logs(from_block=0)
    return [
        (str(e["args"]["authorizer"]), "0x" + bytes(e["args"]["nonce"]).hex())
        for e in events
        if e["args"]["authorizer"] in mine
    ]


def settlement(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/health", timeout=10).json()["settlement"])


def nothing_pending(url: str) -> dict[str, Any] | None:
    status = settlement(url)
    return status if status["pending"] == 0 else None


@pytest.mark.parametrize("mode", ["strict", "batched"])
def test_a_sigkilled_gateway_charges_each_answer_once_and_serves_again(world: World, tmp_path: Path, mode: str) -> None:
    payers = [world.payer() for _ in range(PAYERS)]
    funds = {payer.address: world.usd_balance(payer.address) for payer in payers}
    payee = Account.create().address  # a fresh account with no USD: it only receives
    journal = tmp_path / "journal"
    args = ["--local-price", LOCAL_PRICE, "--pay-to", payee, "--spot-check-rate", "0"]
    if mode == "batched":
        batcher = deploy_batcher(world.chain, world.owner)
        args += ["--journal", str(journal), "--batcher", batcher, "--batch-size", "10", "--flush-interval", "0.5"]
    body = completion_body(world)
    load = Load()

    with gateway_process(world, mode, tmp_path / "gateway-1.log", *args) as (first, url):
        requirements = requirements_of(url, body)
        price = int(requirements.amount)
        stop = threading.Event()
        agents = [
            threading.Thread(
                target=agent, args=(url, body, requirements, payers[index % PAYERS], load, stop), daemon=True
            )
            for index in range(WORKERS)
        ]
        started = time.monotonic()
        for thread in agents:
            thread.start()
        wait_for(lambda: len(load.served) >= SERVED_BEFORE_KILL or load.refused, "paid answers", LOAD_TIMEOUT_S)
        assert not load.refused, load.refused
        first.sigkill()  # mid-load: several paid requests are on their way
        load_s = time.monotonic() - started
        stop.set()
        for thread in agents:
            thread.join(timeout=90)
        assert not any(thread.is_alive() for thread in agents)
    assert not load.refused, load.refused  # every request before the kill was answered 200
    assert load.unanswered, "the kill did not interrupt any request"

    pending_at_restart = 0
    if mode == "batched":
        left = PaymentJournal(journal)
        pending_at_restart = len(left.pending())
        left.close()

    restart_started = time.monotonic()
    with gateway_process(world, mode, tmp_path / "gateway-2.log", *args) as (_second, url):
        restart_s = time.monotonic() - restart_started
        if mode == "batched":
            status = wait_for(lambda: nothing_pending(url), "the recovered payments to settle", 60)
            assert status["recovered"] == pending_at_restart

        settled = settled_on_chain(world, payers)
        assert len(settled) == len(set(settled)), "an authorisation was settled twice"
        assert load.served <= set(settled), "an answered request was never paid"
        assert set(settled) <= set(load.sent), "a payment nobody sent was settled"
        lost = set(settled) - load.served
        assert lost <= load.unanswered, "a payment was settled for a request that was refused"
        assert len(lost) <= WORKERS

        # An agent whose answer was lost retries with the same payment: refused, never charged twice.
        for key in sorted(lost)[:2]:
            retry = httpx.post(
                f"{url}/v1/completions", json=body, headers={PAID: encode_header(load.sent[key])}, timeout=60
            )
            assert retry.status_code == 402, retry.text

        # The restarted gateway serves new paid requests and settles them.
        client = ExactEvmClient(payers[0])
        for _ in range(3):
            payment = client.pay(requirements)
            reply = httpx.post(f"{url}/v1/completions", json=body, headers={PAID: encode_header(payment)}, timeout=60)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["text"] is not None
            load.served.add(key_of(payment))
        if mode == "batched":
            wait_for(lambda: nothing_pending(url), "the new payments to settle", 60)

    settled = settled_on_chain(world, payers)
    assert len(settled) == len(set(settled)) and load.served <= set(settled)
    for payer in payers:
        count = sum(1 for who, _nonce in settled if who == payer.address)
        assert world.usd_balance(payer.address) == funds[payer.address] - count * price
    assert world.usd_balance(payee) == len(settled) * price
    print(
        f"\n{mode} gateway kill: {len(load.sent)} sent, {len(load.served)} answered, {len(settled)} settled, "
        f"{len(lost)} settled with the answer lost, {len(load.unanswered)} in flight at the kill, "
        f"{pending_at_restart} recovered from the journal; load {load_s:.1f}s, restart {restart_s:.1f}s"
    )
