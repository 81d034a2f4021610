"""Posting jobs with escrow, the reverse auction, awarding and cancelling, and every revert on the way."""

from __future__ import annotations

import pytest
from web3 import Web3

from covey.compute.client import JobStatus, JobTerms, Resources
from covey.errors import ChainError

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV  # the bazaar fixture's minimum provider stake
SPEC = bytes(Web3.keccak(text="job spec:a"))


def test_posting_a_job_escrows_the_maximum_cost(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    job_id = bazaar.post(buyer, units=4, max_price=20, seconds_per_unit=10)

    job = bazaar.client.job(job_id)
    assert job.status == JobStatus.OPEN
    assert job.escrow == 20 * 4 * 10
    assert bazaar.usd_of(buyer) == 100 * USD - 800
    assert bazaar.client.total_escrow() == 800
    assert job.bid_deadline > bazaar.chain.timestamp()
    assert bazaar.market.functions.escrowFor(20, 4, 10).call() == 800
    bazaar.assert_escrow_balanced()


@pytest.mark.parametrize("short", ["balance", "allowance"])
def test_a_buyer_whose_escrow_is_short_is_refused_and_no_job_exists(bazaar, short: str) -> None:
    buyer = bazaar.buyer(799 if short == "balance" else 10 * USD)
    allowance = 10 * USD if short == "balance" else 799
    bazaar.send(bazaar.usd.functions.approve(bazaar.market.address, allowance), buyer)
    post = bazaar.market.functions.postJob(bazaar.spec_hash("short"), 1, 1, 0, 20, 4, 10, 100, 60)

    assert bazaar.reverts(post, buyer) == "market: escrow short"
    assert bazaar.client.job_count() == 0
    assert bazaar.client.total_escrow() == 0


def test_the_client_reports_a_short_escrow_as_a_chain_error(bazaar) -> None:
    buyer = bazaar.buyer(5)
    with pytest.raises(ChainError, match="market: escrow short"):
        bazaar.client.post_job(buyer, JobTerms(bazaar.spec_hash("x"), 1, 10, 1))


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((b"\x00" * 32, 1, 1, 0, 20, 4, 10, 100, 60), "market: empty spec"),
        ((SPEC, 1, 1, 0, 0, 4, 10, 100, 60), "market: zero price"),
        ((SPEC, 1, 1, 0, 20, 0, 10, 100, 60), "market: bad unit count"),
        ((SPEC, 1, 1, 0, 20, 257, 10, 100, 60), "market: bad unit count"),
        ((SPEC, 1, 1, 0, 20, 4, 0, 100, 60), "market: zero seconds per unit"),
        ((SPEC, 1, 1, 0, 20, 4, 10, 0, 60), "market: bad bid window"),
        ((SPEC, 1, 1, 0, 20, 4, 10, 8 * 86_400, 60), "market: bad bid window"),
        ((SPEC, 1, 1, 0, 20, 4, 10, 100, 0), "market: bad heartbeat interval"),
        ((SPEC, 1, 1, 0, 20, 4, 10, 100, 86_401), "market: bad heartbeat interval"),
    ],
)
def test_post_job_reverts(bazaar, args: tuple, reason: str) -> None:
    buyer = bazaar.buyer(1_000 * USD)
    bazaar.send(bazaar.usd.functions.approve(bazaar.market.address, 1_000 * USD), buyer)
    assert bazaar.reverts(bazaar.market.functions.postJob(*args), buyer) == reason


def test_the_cheapest_fitting_bid_wins_and_the_escrow_above_its_price_is_refunded(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    pricey, cheap, mid = bazaar.provider(18), bazaar.provider(11), bazaar.provider(14)
    job_id = bazaar.post(buyer, units=4, max_price=20, seconds_per_unit=10)
    for provider, price in ((pricey, 18), (cheap, 11), (mid, 14)):
        receipt = bazaar.client.bid(provider, job_id, price)
        (placed,) = bazaar.events("BidPlaced", receipt)
        assert placed["pricePerUnitSecond"] == price and placed["stake"] == MIN_STAKE
    assert [b.provider for b in bazaar.client.bids(job_id)] == [pricey.address, cheap.address, mid.address]

    bazaar.advance_past_bidding(job_id)
    before = bazaar.usd_of(buyer)
    receipt = bazaar.client.award(pricey, job_id)  # anyone may award, even a losing bidder

    (awarded,) = bazaar.events("JobAwarded", receipt)
    assert awarded == {
        "jobId": job_id,
        "provider": cheap.address,
        "pricePerUnitSecond": 11,
        "escrow": 440,
        "refund": 360,
    }
    job = bazaar.client.job(job_id)
    assert (job.status, job.provider, job.price_per_unit_second, job.escrow) == (
        JobStatus.RUNNING,
        cheap.address,
        11,
        440,
    )
    assert job.last_heartbeat == job.awarded_at == bazaar.chain.timestamp()
    assert bazaar.usd_of(buyer) == before + 360
    bazaar.assert_escrow_balanced()


def test_equal_prices_go_to_the_higher_stake_then_the_earlier_bid(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    first, rich, second = bazaar.provider(10), bazaar.provider(10, stake=3 * MIN_STAKE), bazaar.provider(10)
    job_id = bazaar.awarded(buyer, [(first, 10), (rich, 10), (second, 10)])
    assert bazaar.client.job(job_id).provider == rich.address

    job_id = bazaar.awarded(buyer, [(second, 10), (first, 10)], label="tie")
    assert bazaar.client.job(job_id).provider == second.address


def test_award_skips_bidders_that_no_longer_qualify(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    retired, shrunk, unbonded, honest = (bazaar.provider(5), bazaar.provider(6), bazaar.provider(7), bazaar.provider(9))
    job_id = bazaar.post(buyer, needs=Resources(2, 4096, 0))
    for provider, price in ((retired, 5), (shrunk, 6), (unbonded, 7), (honest, 9)):
        bazaar.client.bid(provider, job_id, price)
    bazaar.client.retire_offer(retired)
    bazaar.client.register_offer(shrunk, Resources(1, 4096, 0), 6)
    bazaar.send(bazaar.staking.functions.unbond(3, 1), unbonded)

    bazaar.advance_past_bidding(job_id)
    bazaar.client.award(buyer, job_id)
    assert bazaar.client.job(job_id).provider == honest.address


def test_bid_reverts(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    alice = bazaar.provider(10)
    small = bazaar.provider(10, resources=Resources(1, 4096, 0))
    (no_offer,) = bazaar.people(1)
    bazaar.stake(no_offer, MIN_STAKE)
    job_id = bazaar.post(buyer, max_price=20, needs=Resources(2, 4096, 0))
    bid = bazaar.market.functions.bid

    assert bazaar.reverts(bid(99, 10), alice) == "market: unknown job"
    assert bazaar.reverts(bid(job_id, 0), alice) == "market: zero price"
    assert bazaar.reverts(bid(job_id, 21), alice) == "market: price above max"
    assert bazaar.reverts(bid(job_id, 10), no_offer) == "market: no offer"
    assert bazaar.reverts(bid(job_id, 10), small) == "market: offer too small"
    bazaar.send(bazaar.staking.functions.unbond(3, MIN_STAKE), alice)
    assert bazaar.reverts(bid(job_id, 10), alice) == "market: stake too low"

    bob = bazaar.provider(10)
    bazaar.client.bid(bob, job_id, 10)
    assert bazaar.reverts(bid(job_id, 9), bob) == "market: already bid"
    bazaar.advance_past_bidding(job_id)
    late = bazaar.provider(10)
    assert bazaar.reverts(bid(job_id, 10), late) == "market: bidding closed"
    bazaar.client.award(buyer, job_id)
    assert bazaar.reverts(bid(job_id, 10), late) == "market: not open"


def test_a_job_takes_at_most_sixteen_bids(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    job_id = bazaar.post(buyer)
    providers = [bazaar.provider(10) for _ in range(17)]
    for provider in providers[:16]:
        bazaar.client.bid(provider, job_id, 10)
    assert bazaar.reverts(bazaar.market.functions.bid(job_id, 10), providers[16]) == "market: too many bids"


def test_award_reverts(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    job_id = bazaar.post(buyer)
    award = bazaar.market.functions.award
    assert bazaar.reverts(award(job_id), buyer) == "market: bidding open"
    bazaar.advance_past_bidding(job_id)
    assert bazaar.reverts(award(job_id), buyer) == "market: no eligible bid"
    assert bazaar.reverts(award(0), buyer) == "market: unknown job"


def test_the_buyer_cancels_an_open_job_and_gets_the_escrow_back(bazaar) -> None:
    buyer, stranger = bazaar.buyer(100 * USD), bazaar.buyer(0)
    job_id = bazaar.post(buyer)
    cancel = bazaar.market.functions.cancelJob
    assert bazaar.reverts(cancel(job_id), stranger) == "market: not the buyer"

    receipt = bazaar.client.cancel_job(buyer, job_id)
    assert bazaar.events("JobCancelled", receipt) == [{"jobId": job_id, "buyer": buyer.address, "refund": 800}]
    assert bazaar.usd_of(buyer) == 100 * USD
    job = bazaar.client.job(job_id)
    assert (job.status, job.escrow, job.refunded) == (JobStatus.CANCELLED, 0, 800)
    assert bazaar.reverts(cancel(job_id), buyer) == "market: not open"
    bazaar.assert_escrow_balanced()


def test_a_job_cannot_be_cancelled_once_awarded(bazaar) -> None:
    buyer = bazaar.buyer(100 * USD)
    job_id = bazaar.awarded(buyer, [(bazaar.provider(10), 10)])
    assert bazaar.reverts(bazaar.market.functions.cancelJob(job_id), buyer) == "market: not open"
