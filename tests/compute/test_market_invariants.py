"""Money invariants over random stories: USD is never created or lost, and escrow always matches the Market's balance.

Each story is a seeded random walk over jobs: post, bid, award, commit, go silent, report, draw, verify
right or wrong, settle late, cancel. After every step the Market holds exactly the sum of its jobs' escrows,
and the USD of buyers, providers and the Market adds up to what the faucet minted.
"""

from __future__ import annotations

import random

import pytest

from covey.compute.client import JobStatus
from covey.errors import ChainError

USD = 10**6
VERIFY_WINDOW_S = 600  # the bazaar fixture's


@pytest.mark.parametrize("seed", [1, 2])
def test_usd_is_conserved_and_escrow_always_balances(bazaar, seed: int) -> None:
    rng = random.Random(seed)
    buyers = [bazaar.buyer(50 * USD) for _ in range(2)]
    providers = [bazaar.provider(rng.randint(5, 15)) for _ in range(3)]
    everyone = [*buyers, *providers]
    minted = 100 * USD

    def check() -> None:
        bazaar.assert_escrow_balanced()
        held = sum(bazaar.usd_of(account) for account in everyone) + bazaar.usd_of(bazaar.market.address)
        assert held == minted

    for _ in range(14):
        buyer = rng.choice(buyers)
        job_id = bazaar.post(
            buyer,
            units=rng.randint(1, 4),
            max_price=15,
            seconds_per_unit=rng.randint(1, 9),
            heartbeat=60,
            extra_allowance=rng.choice([0, 5 * USD]),
        )
        bidders = rng.sample(providers, rng.randint(0, 3))
        for provider in bidders:
            try:
                bazaar.client.bid(provider, job_id, rng.randint(1, 15))
            except ChainError as exc:  # a provider slashed below the minimum stake earlier in the story
                assert exc.reason in ("market: stake too low", "market: failed this work before")
        check()
        if not bidders or rng.random() < 0.1:
            bazaar.client.cancel_job(buyer, job_id)
            check()
            continue
        bazaar.advance_past_bidding(job_id)
        try:
            bazaar.client.award(buyer, job_id)
        except ChainError as exc:
            assert exc.reason == "market: no eligible bid"
            bazaar.client.cancel_job(buyer, job_id)
            check()
            continue
        job = bazaar.client.job(job_id)
        provider = next(p for p in providers if p.address == job.provider)
        for unit in range(rng.randint(0, job.units)):
            bazaar.client.commit_result(provider, job_id, unit, bazaar.result_of(f"{job_id}:{unit}"))
        check()
        if bazaar.client.job(job_id).status == JobStatus.RUNNING:
            bazaar.advance(61)
            bazaar.client.report_missed_heartbeat(buyer, job_id)
            check()
        if bazaar.client.job(job_id).status != JobStatus.VERIFYING:
            continue
        if rng.random() < 0.3:
            bazaar.advance(VERIFY_WINDOW_S + 1)
            bazaar.client.settle(buyer, job_id)
        else:
            for unit in bazaar.client.draw_sample(buyer, job_id):
                if bazaar.client.job(job_id).status != JobStatus.VERIFYING:
                    break
                bazaar.client.verify_unit(buyer, job_id, unit, rng.random() < 0.8)
        check()
