"""Heartbeats and result commits while a job runs, and what a missed heartbeat does: slash, verify, re-post."""

from __future__ import annotations

from covey.compute.client import JobStatus

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV
HEARTBEAT_SLASH = 10 * COV  # the bazaar fixture's parameters
TREASURY = "Treasury"


def test_heartbeats_and_commits_keep_the_provider_alive(bazaar) -> None:
    buyer, alice = bazaar.buyer(), bazaar.provider(10)
    job_id = bazaar.awarded(buyer, [(alice, 10)], heartbeat=60)

    bazaar.advance(50)
    receipt = bazaar.client.heartbeat(alice, job_id)
    (beat,) = bazaar.events("Heartbeat", receipt)
    assert beat["provider"] == alice.address and beat["timestamp"] == bazaar.chain.timestamp()
    bazaar.advance(50)
    receipt = bazaar.client.commit_result(alice, job_id, 0, bazaar.result_of("u0"))
    assert bazaar.events("ResultCommitted", receipt) == [
        {"jobId": job_id, "provider": alice.address, "unit": 0, "resultHash": bazaar.result_of("u0")}
    ]
    job = bazaar.client.job(job_id)
    assert job.last_heartbeat == bazaar.chain.timestamp()
    assert job.committed_units == 1
    assert bazaar.market.functions.heartbeatDeadline(job_id).call() == job.last_heartbeat + 60
    assert bazaar.reverts(bazaar.market.functions.reportMissedHeartbeat(job_id), buyer) == (
        "market: heartbeat not missed"
    )


def test_heartbeat_and_commit_reverts(bazaar) -> None:
    buyer, alice, mallory = bazaar.buyer(), bazaar.provider(10), bazaar.provider(10)
    job_id = bazaar.post(buyer)
    fns = bazaar.market.functions
    assert bazaar.reverts(fns.heartbeat(job_id), alice) == "market: not running"
    bazaar.client.bid(alice, job_id, 10)
    bazaar.advance_past_bidding(job_id)
    bazaar.client.award(buyer, job_id)

    assert bazaar.reverts(fns.heartbeat(job_id), mallory) == "market: not the provider"
    assert bazaar.reverts(fns.commitResult(job_id, 0, bazaar.result_of("x")), mallory) == "market: not the provider"
    assert bazaar.reverts(fns.commitResult(job_id, 1, bazaar.result_of("x")), alice) == "market: unit out of order"
    assert bazaar.reverts(fns.commitResult(job_id, 0, b"\x00" * 32), alice) == "market: empty result"
    assert bazaar.reverts(fns.heartbeat(77), alice) == "market: unknown job"

    bazaar.advance(61)
    assert bazaar.reverts(fns.heartbeat(job_id), alice) == "market: heartbeat missed"
    assert bazaar.reverts(fns.commitResult(job_id, 0, bazaar.result_of("x")), alice) == "market: heartbeat missed"


def test_a_silent_provider_is_slashed_and_its_remaining_units_are_reposted(bazaar) -> None:
    buyer, dead, other = bazaar.buyer(100 * USD), bazaar.provider(10), bazaar.provider(15)
    job_id = bazaar.awarded(
        buyer,
        [(dead, 10), (other, 15)],
        units=4,
        max_price=20,
        seconds_per_unit=10,
        heartbeat=60,
        extra_allowance=10 * USD,
    )
    bazaar.client.commit_result(dead, job_id, 0, bazaar.result_of("u0"))
    treasury_before = int(bazaar.cov.functions.balanceOf(bazaar.deployment.address(TREASURY)).call())
    buyer_before = bazaar.usd_of(buyer)

    bazaar.advance(61)
    reporter = bazaar.buyer(0)
    receipt = bazaar.send(bazaar.market.functions.reportMissedHeartbeat(job_id), reporter)

    assert bazaar.events("HeartbeatMissed", receipt) == [
        {"jobId": job_id, "provider": dead.address, "reporter": reporter.address, "committedUnits": 1}
    ]
    (slash,) = bazaar.events("ProviderSlashed", receipt)
    assert (slash["slashed"], slash["reason"]) == (HEARTBEAT_SLASH, "market: missed heartbeat")
    assert bazaar.stake_of(dead) == MIN_STAKE - HEARTBEAT_SLASH
    assert int(bazaar.cov.functions.balanceOf(bazaar.deployment.address(TREASURY)).call()) == (
        treasury_before + HEARTBEAT_SLASH
    )
    # The committed unit waits for verification; the three others are a new job at the old max price,
    # topped up from the buyer's allowance (30 units x 10 s x (20 - 10) USD units).
    (reposted,) = bazaar.events("JobReposted", receipt)
    child_id = reposted["newJobId"]
    assert reposted == {
        "jobId": job_id,
        "newJobId": child_id,
        "firstUnit": 1,
        "units": 3,
        "maxPricePerUnitSecond": 20,
        "escrow": 600,
        "topUp": 300,
    }
    assert bazaar.usd_of(buyer) == buyer_before - 300
    old, child = bazaar.client.job(job_id), bazaar.client.job(child_id)
    assert (old.status, old.escrow, old.child_job, old.slashed) == (JobStatus.VERIFYING, 100, child_id, HEARTBEAT_SLASH)
    assert (child.status, child.units, child.first_unit, child.parent_job) == (JobStatus.OPEN, 3, 1, job_id)
    assert child.spec_hash == old.spec_hash and child.needs == old.needs
    bazaar.assert_escrow_balanced()

    # The silent provider may not bid for the work it abandoned; another provider finishes it.
    assert bazaar.reverts(bazaar.market.functions.bid(child_id, 10), dead) == "market: failed this work before"
    bazaar.client.bid(other, child_id, 15)
    bazaar.advance_past_bidding(child_id)
    bazaar.client.award(other, child_id)
    bazaar.commit_all(other, child_id)
    assert bazaar.client.job(child_id).status == JobStatus.VERIFYING


def test_without_a_top_up_the_reposted_job_is_capped_at_what_the_escrow_pays(bazaar) -> None:
    buyer, dead = bazaar.buyer(100 * USD), bazaar.provider(10)
    job_id = bazaar.awarded(buyer, [(dead, 10)], units=2, max_price=20, seconds_per_unit=10, heartbeat=60)
    bazaar.advance(61)
    child_id = bazaar.client.report_missed_heartbeat(buyer, job_id)

    old, child = bazaar.client.job(job_id), bazaar.client.job(child_id)
    assert (old.status, old.escrow) == (JobStatus.FAILED, 0)
    assert (child.max_price_per_unit_second, child.escrow, child.units, child.first_unit) == (10, 200, 2, 0)
    bazaar.assert_escrow_balanced()


def test_a_provider_with_nothing_left_to_slash_still_loses_the_job(bazaar) -> None:
    buyer, dead = bazaar.buyer(100 * USD), bazaar.provider(10)
    job_id = bazaar.awarded(buyer, [(dead, 10)], heartbeat=60)
    bazaar.send(bazaar.staking.functions.unbond(3, MIN_STAKE), dead)
    bazaar.advance(200)  # past the unbonding delay too: the provider withdraws before anyone notices
    bazaar.send(bazaar.staking.functions.withdraw(), dead)

    receipt = bazaar.send(bazaar.market.functions.reportMissedHeartbeat(job_id), buyer)
    (slash,) = bazaar.events("ProviderSlashed", receipt)
    assert (slash["requested"], slash["slashed"]) == (HEARTBEAT_SLASH, 0)
    assert bazaar.client.job(job_id).status == JobStatus.FAILED


def test_report_reverts(bazaar) -> None:
    buyer, alice = bazaar.buyer(), bazaar.provider(10)
    job_id = bazaar.post(buyer)
    report = bazaar.market.functions.reportMissedHeartbeat
    assert bazaar.reverts(report(job_id), buyer) == "market: not running"
    assert bazaar.reverts(report(5), buyer) == "market: unknown job"
    bazaar.client.bid(alice, job_id, 10)
    bazaar.advance_past_bidding(job_id)
    bazaar.client.award(buyer, job_id)
    bazaar.commit_all(alice, job_id)
    bazaar.advance(1_000)
    assert bazaar.reverts(report(job_id), buyer) == "market: not running"  # finished work needs no heartbeat
