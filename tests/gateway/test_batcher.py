"""The PaymentBatcher settles many payments per transaction, skips bad ones, and costs less gas each."""

from __future__ import annotations

import time

import pytest
from web3.logs import DISCARD

from covey.gateway import ExactEvmFacilitator, ExactEvmServer, Reason, deploy_batcher
from covey.gateway.x402.mechanisms.evm.eip3009 import Authorization, split_signature
from covey.gateway.x402.mechanisms.evm.exact.onchain import batch_settle_calldata
from covey.gateway.x402.types import PaymentPayload, PaymentRequirements
from tests.x402_scaffolding.client import ExactEvmClient

from .conftest import Money

PRICE = 10_000


def payments(
    money: Money, count: int, *, funds: int = PRICE
) -> tuple[list[tuple[PaymentPayload, PaymentRequirements]], list[str]]:
    """`count` payments of PRICE to the payee, each from its own payer funded with `funds`."""
    req = ExactEvmServer(money.chain, money.usd.address, money.payee).requirements(PRICE)
    payers = [money.fund(funds) for _ in range(count)]
    return [(ExactEvmClient(payer).pay(req), req) for payer in payers], [p.address for p in payers]


def gas_used(money: Money, tx: str) -> int:
    return int(money.chain.w3.eth.get_transaction_receipt(tx)["gasUsed"])


def test_a_batch_skips_a_bad_payment_instead_of_reverting(money: Money) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    facilitator = ExactEvmFacilitator(money.chain, money.facilitator, batcher=batcher)
    items, payers = payments(money, 4)
    spent = ExactEvmFacilitator(money.chain, money.facilitator).settle(*items[1])  # settled elsewhere first
    expired_payer = money.fund(PRICE)
    expiring = ExactEvmClient(expired_payer).pay(items[0][1], valid_before=int(time.time()) + 2)
    time.sleep(3)  # let it expire: the token (and the batcher's call) must refuse it
    broke = ExactEvmClient(money.fund(0)).pay(items[0][1])

    outcomes = facilitator.settle_batch([*items, (expiring, items[0][1]), (broke, items[0][1])])
    results = [r for r in outcomes if r is not None]

    assert len(results) == len(outcomes)  # every payment got a final answer
    assert [r.success for r in results] == [True, True, True, True, False, False]
    assert results[1] == spent  # the earlier settlement is recognised, not paid again
    assert len({results[i].transaction for i in (0, 2, 3)}) == 1  # one batch transaction
    assert [r.error_reason for r in results[4:]] == [Reason.VALID_BEFORE, Reason.INSUFFICIENT_FUNDS]
    assert money.balance(money.payee) == 4 * PRICE
    assert all(money.balance(p) == 0 for p in payers)
    batch_events = money.chain.contract("PaymentBatcher", batcher).events
    receipt = money.chain.w3.eth.get_transaction_receipt(results[0].transaction)
    assert len(batch_events.PaymentSettled().process_receipt(receipt, errors=DISCARD)) == 3
    assert len(batch_events.PaymentSkipped().process_receipt(receipt, errors=DISCARD)) == 3


def test_gas_per_payment_strict_vs_batched(money: Money, capsys: pytest.CaptureFixture[str]) -> None:
    batcher = deploy_batcher(money.chain, money.deployer)
    strict = ExactEvmFacilitator(money.chain, money.facilitator)
    batched = ExactEvmFacilitator(money.chain, money.facilitator, batcher=batcher)
    warmup, _ = payments(money, 1)
    strict.settle(*warmup[0])  # the payee's balance is non-zero from now on, as in steady operation

    # Payers keep a balance, so no storage refund for emptying one flatters either side.
    singles = [gas_used(money, strict.settle(*item).transaction) for item in payments(money, 3, funds=2 * PRICE)[0]]
    per_payment = {"strict": sum(singles) / len(singles)}
    for n in (10, 50):
        results = batched.settle_batch(payments(money, n, funds=2 * PRICE)[0])
        transactions = {r.transaction for r in results if r is not None and r.success}
        assert len(transactions) == 1 and len(results) == n
        per_payment[f"batched n={n}"] = gas_used(money, transactions.pop()) / n

    with capsys.disabled():
        print("\ngas per payment: " + ", ".join(f"{k}: {v:,.0f}" for k, v in per_payment.items()))
    assert per_payment["batched n=10"] < per_payment["strict"]
    assert per_payment["batched n=50"] <= per_payment["batched n=10"]


def test_the_hand_encoded_batch_is_the_abi_encoding_web3_would_send(money: Money) -> None:
    items, _payers = payments(money, 3)
    signed = [(Authorization.from_wire(p.payload["authorization"]), str(p.payload["signature"])) for p, _req in items]
    batcher = money.chain.contract("PaymentBatcher", deploy_batcher(money.chain, money.deployer))
    rows = [(a.payer, a.payee, a.value, a.valid_after, a.valid_before, a.nonce, *split_signature(s)) for a, s in signed]

    expected = batcher.encode_abi("settle", [money.usd.address, rows])

    assert "0x" + batch_settle_calldata(money.usd.address, signed).hex() == expected
