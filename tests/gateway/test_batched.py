"""Batched settlement: answers before the chain, settles later in batches, and survives a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from x402.http.clients import x402HttpxClient

from covey.chain import dev_accounts
from covey.gateway import Reason, deploy_batcher
from covey.gateway.x402.encoding import (
    PAYMENT_SIGNATURE_HEADER,
    decode_payment_required,
    decode_payment_response,
    encode_header,
)
from covey.gateway.x402.journal import JOURNAL_FILE, PaymentJournal
from covey.gateway.x402.mechanisms.evm.eip3009 import Authorization
from covey.gateway.x402.mechanisms.evm.exact.onchain import transfer_call
from covey.gateway.x402.types import PaymentRequirements
from tests.x402_scaffolding.client import ExactEvmClient
from tests.x402_scaffolding.demo_app import DEMO_PRICE_ATOMIC, FACILITATOR_KEY_ENV, create_demo_app

from .conftest import PAYER_FUNDS, Money, demo_process, free_port, serve_in_thread
from .test_paid_route import official_client


def wait_settled(url: str, timeout_s: float = 60.0) -> dict[str, int]:
    """Poll the demo's free route until its settlement has nothing pending; return the counters."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/free", timeout=10).json()["settlement"]
        if status["pending"] == 0:
            return dict(status)
        time.sleep(0.2)
    raise AssertionError(f"payments still pending after {timeout_s}s: {status}")


def requirements_of(url: str) -> PaymentRequirements:
    return decode_payment_required(httpx.get(f"{url}/paid", timeout=10).headers["PAYMENT-REQUIRED"]).accepts[0]


@pytest.fixture
def batched_url(money: Money, tmp_path: Path) -> Iterator[str]:
    batcher = deploy_batcher(money.chain, money.deployer)
    app = create_demo_app(
        money.chain,
        money.usd.address,
        money.payee,
        money.facilitator,
        mode="batched",
        journal_dir=tmp_path / "journal",
        batcher=batcher,
        flush_interval_s=0.5,
    )
    with serve_in_thread(app) as url:
        yield url


def test_the_official_client_is_answered_at_once_and_settled_in_a_batch(money: Money, batched_url: str) -> None:
    payers = [money.fund() for _ in range(3)]

    async def visit_all() -> list[httpx.Response]:
        replies = []
        for payer in payers:
            async with x402HttpxClient(official_client(payer, money.chain, money.usd.address), timeout=60) as http:
                replies.append(await http.get(f"{batched_url}/paid"))
        return replies

    replies = asyncio.run(visit_all())

    for reply, payer in zip(replies, payers, strict=True):
        assert reply.status_code == 200, reply.text
        receipt = decode_payment_response(reply.headers["PAYMENT-RESPONSE"])
        assert receipt.success and receipt.payer == payer.address and receipt.transaction == ""
    assert wait_settled(batched_url)["settled"] == 3
    assert money.balance(money.payee) == 3 * DEMO_PRICE_ATOMIC
    assert len(money.authorizations_used()) == 3


def test_a_payer_cannot_spend_the_same_balance_twice_before_settlement(money: Money, tmp_path: Path) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    app = create_demo_app(
        money.chain,
        money.usd.address,
        money.payee,
        money.facilitator,
        mode="batched",
        journal_dir=tmp_path / "journal",
        batcher=batcher,
        flush_interval_s=30,  # nothing settles during the test: only held amounts protect the payee
    )
    payer = money.fund(2 * DEMO_PRICE_ATOMIC)
    with serve_in_thread(app) as url:
        client, req = ExactEvmClient(payer), requirements_of(url)
        replies = [
            httpx.get(f"{url}/paid", headers={"PAYMENT-SIGNATURE": encode_header(client.pay(req))}, timeout=30)
            for _ in range(3)
        ]
        assert [r.status_code for r in replies] == [200, 200, 402]
        assert replies[2].json()["error"] == Reason.INSUFFICIENT_FUNDS
    # Closing the app drained its queue: both accepted payments are on chain.
    assert money.balance(money.payee) == 2 * DEMO_PRICE_ATOMIC


@pytest.mark.e2e
@pytest.mark.anvil
@pytest.mark.parametrize("gw_chain", ["anvil"], indirect=True)  # the server process needs a node it can reach
def test_a_sigkilled_gateway_settles_every_served_payment_exactly_once_after_restart(
    money: Money, gateway_anvil_url: str, tmp_path: Path
) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    journal = tmp_path / "journal"
    payers = [money.fund(10**8) for _ in range(4)]
    facilitator = dev_accounts(3)[2]  # not the fixture's: the server process sends its own transactions
    env = {FACILITATOR_KEY_ENV: "0x" + bytes(facilitator.key).hex()}
    args = ["--rpc-url", gateway_anvil_url, "--token", money.usd.address, "--pay-to", money.payee]
    args += ["--mode", "batched", "--journal", str(journal), "--batcher", batcher]
    args += ["--batch-size", "25", "--flush-interval", "0.5"]
    sent: set[tuple[str, str]] = set()
    served: set[tuple[str, str]] = set()

    port = free_port()
    with demo_process(env, args, port, tmp_path / "first.log") as first:
        url = f"http://127.0.0.1:{port}"
        req = requirements_of(url)

        async def load(worker: int) -> None:
            client = ExactEvmClient(payers[worker % len(payers)])
            async with httpx.AsyncClient(timeout=30) as http:
                while len(served) < 400:
                    payload = client.pay(req)
                    key = (payload.payload["authorization"]["from"], payload.payload["authorization"]["nonce"])
                    sent.add(key)
                    try:
                        reply = await http.get(f"{url}/paid", headers={"PAYMENT-SIGNATURE": encode_header(payload)})
                    except httpx.HTTPError:
                        return  # the server is gone: this request may or may not have been journaled
                    assert reply.status_code == 200, reply.text
                    served.add(key)

        async def kill_mid_load() -> None:
            while len(served) < 60:
                await asyncio.sleep(0.01)
            os.kill(first.pid, signal.SIGKILL)

        async def run() -> None:
            await asyncio.gather(kill_mid_load(), *(load(worker) for worker in range(6)))

        asyncio.run(run())
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL

    left_pending = PaymentJournal(journal)
    pending_at_restart = len(left_pending.pending())
    left_pending.close()

    # The restart runs in this process (a second interpreter start costs seconds): same code, same journal.
    restarted = create_demo_app(
        money.chain, money.usd.address, money.payee, facilitator, mode="batched", journal_dir=journal, batcher=batcher
    )
    with serve_in_thread(restarted) as url:
        status = wait_settled(url)
    assert status["recovered"] == pending_at_restart > 0

    on_chain = [(e["authorizer"], "0x" + bytes(e["nonce"]).hex()) for e in money.authorizations_used()]
    assert len(on_chain) == len(set(on_chain)), "an authorisation was settled twice"
    assert served <= set(on_chain), "a served request was never paid"
    assert set(on_chain) <= sent
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC * len(on_chain)
    batch_events = money.chain.contract("PaymentBatcher", batcher).events.PaymentSettled()
    assert len(batch_events.get_logs(from_block=0)) == len(on_chain)
    print(
        f"\ncrash test: {len(sent)} sent, {len(served)} served, {len(on_chain)} settled, {pending_at_restart} recovered"
    )


def _batched_demo(money: Money, journal: Path, batcher: str, *, flush_interval_s: float = 0.2) -> FastAPI:
    return create_demo_app(
        money.chain,
        money.usd.address,
        money.payee,
        money.facilitator,
        mode="batched",
        journal_dir=journal,
        batcher=batcher,
        flush_interval_s=flush_interval_s,
    )


def _complete_journal(journal: Path) -> None:
    """A journal whose record reaches back further than any payment lives (as after weeks of service)."""
    journal.mkdir(parents=True)
    (journal / JOURNAL_FILE).write_text('{"op":"meta","complete_after":0}\n')


def test_a_payment_settled_before_a_restart_is_refused_after_every_restart(money: Money, tmp_path: Path) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    journal = tmp_path / "journal"
    _complete_journal(journal)
    payer = money.fund()
    with serve_in_thread(_batched_demo(money, journal, batcher)) as url:
        header = encode_header(ExactEvmClient(payer).pay(requirements_of(url)))
        assert httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30).status_code == 200
        assert wait_settled(url)["settled"] == 1

    for _restart in range(2):
        with serve_in_thread(_batched_demo(money, journal, batcher)) as url:
            replay = httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
            state = httpx.get(f"{url}/free", timeout=10).json()

        assert replay.status_code == 402
        assert replay.json()["error"] == Reason.NONCE_ALREADY_USED
        assert state["served"] == 0  # refused before the route ran
        # The journal's record refused it, from memory: no chain read.
        assert (state["settlement"]["refused_spent"], state["settlement"]["chain_checks"]) == (1, 0)
    assert money.balance(payer.address) == PAYER_FUNDS - DEMO_PRICE_ATOMIC
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC
    assert len(money.authorizations_used(payer.address)) == 1


@pytest.mark.parametrize("gw_chain", ["embedded", "anvil"], indirect=True)
def test_a_journal_that_never_saw_a_settled_payment_asks_the_chain(money: Money, tmp_path: Path) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    payer = money.fund()
    with serve_in_thread(_batched_demo(money, tmp_path / "first", batcher)) as url:
        header = encode_header(ExactEvmClient(payer).pay(requirements_of(url)))
        assert httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30).status_code == 200
        wait_settled(url)

    # A new journal (lost, moved, or a switch from strict settlement) cannot vouch for payments signed
    # before it existed: the token's `authorizationState` does.
    with serve_in_thread(_batched_demo(money, tmp_path / "second", batcher)) as url:
        replay = httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=30)
        fresh = httpx.get(
            f"{url}/paid",
            headers={PAYMENT_SIGNATURE_HEADER: encode_header(ExactEvmClient(payer).pay(requirements_of(url)))},
            timeout=30,
        )
        state = httpx.get(f"{url}/free", timeout=10).json()

    assert replay.status_code == 402 and replay.json()["error"] == Reason.NONCE_ALREADY_USED
    assert fresh.status_code == 200
    # The second journal never saw the payment: only the chain can have refused it.
    assert state["served"] == 1 and state["settlement"]["refused_spent"] == 1
    assert state["settlement"]["chain_checks"] >= 1
    assert money.balance(payer.address) == PAYER_FUNDS - 2 * DEMO_PRICE_ATOMIC


def test_a_nonce_someone_else_used_is_not_counted_as_our_settlement(money: Money, tmp_path: Path) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    payer = money.fund()
    with serve_in_thread(_batched_demo(money, tmp_path / "journal", batcher, flush_interval_s=2.0)) as url:
        payment = ExactEvmClient(payer).pay(requirements_of(url))
        served = httpx.get(f"{url}/paid", headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)}, timeout=30)
        assert served.status_code == 200
        # Before the batch runs, another party submits the same authorisation to the token itself.
        auth = Authorization.from_wire(payment.payload["authorization"])
        money.chain.transact(transfer_call(money.usd, auth, payment.payload["signature"]), money.deployer)
        status = wait_settled(url)

    # The payee was paid once, by someone else's transaction: the batch reports a failure, not a settlement.
    assert (status["settled"], status["failed"]) == (0, 1)
    assert money.balance(money.payee) == DEMO_PRICE_ATOMIC
