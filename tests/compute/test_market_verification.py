"""Verification: the sample drawn from a later block, verdicts by hash or by judgement, payment and slashing."""

from __future__ import annotations

import pytest

from covey.compute.client import JobStatus, Verdict

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV
WRONG_RESULT_SLASH = 50 * COV
VERIFY_WINDOW_S = 600  # the bazaar fixture's parameters


def committed_job(bazaar, *, units: int = 4, price: int = 10, max_price: int = 20, **post) -> tuple:
    buyer, provider = bazaar.buyer(100 * USD), bazaar.provider(price)
    job_id = bazaar.awarded(buyer, [(provider, price)], units=units, max_price=max_price, **post)
    bazaar.commit_all(provider, job_id)
    return buyer, provider, job_id


def test_the_last_commit_opens_verification_with_a_sample_block_after_it(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar)
    job = bazaar.client.job(job_id)
    assert job.status == JobStatus.VERIFYING
    assert job.sample_block == bazaar.chain.block_number() + 1
    assert job.verify_deadline == bazaar.chain.timestamp() + VERIFY_WINDOW_S
    assert not job.sample_drawn
    assert job.sample_size == 1  # ceil(4 x 25%), fixed before anyone can know the sample
    draw = bazaar.market.functions.drawSample(job_id)
    assert bazaar.reverts(draw, buyer) == "market: sample block not mined"  # it would run in the sample block itself


def test_the_sample_is_a_quarter_of_the_units_drawn_from_the_sample_blocks_hash(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar, units=8)
    sampled = bazaar.client.draw_sample(buyer, job_id)

    job = bazaar.client.job(job_id)
    assert len(sampled) == job.sample_size == 2  # ceil(8 x 25%)
    assert sampled == job.sampled_units and len(set(sampled)) == 2 and all(0 <= u < 8 for u in sampled)
    block_hash = bytes(bazaar.chain.w3.eth.get_block(job.sample_block)["hash"])
    from web3 import Web3

    seed = Web3.keccak(block_hash + job_id.to_bytes(32, "big"))
    logs = bazaar.market.events.SampleDrawn().get_logs(from_block=bazaar.chain.block_number())
    assert bytes(logs[0]["args"]["seed"]) == seed
    assert [bazaar.client.unit_result(job_id, u).sampled for u in range(8)] == [u in sampled for u in range(8)]
    assert bazaar.reverts(bazaar.market.functions.drawSample(job_id), buyer) == "market: sample already drawn"


def test_a_single_unit_job_always_samples_its_unit(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar, units=1)
    assert bazaar.client.draw_sample(buyer, job_id) == [0]


def test_matching_hashes_pay_every_committed_unit(bazaar) -> None:
    buyer, provider, job_id = committed_job(bazaar, units=4, price=10, max_price=20, seconds_per_unit=10)
    (verifier,) = bazaar.people(1)
    bazaar.client.set_verifier(bazaar.owner, verifier.address)
    sampled = bazaar.client.draw_sample(verifier, job_id)
    provider_before, buyer_before = bazaar.usd_of(provider), bazaar.usd_of(buyer)

    job = bazaar.client.job(job_id)
    (unit,) = sampled
    receipt = bazaar.client.verify_unit_hash(verifier, job_id, unit, bazaar.result_of(f"honest:{unit}"))

    (verified,) = bazaar.events("UnitVerified", receipt)
    assert verified["ok"] and verified["verifier"] == verifier.address
    (settled,) = bazaar.events("JobSettled", receipt)
    assert settled == {
        "jobId": job_id,
        "provider": provider.address,
        "status": JobStatus.SETTLED,
        "paidUnits": 4,
        "paid": 400,
        "refunded": 0,
    }
    assert bazaar.usd_of(provider) == provider_before + 4 * job.unit_price() == provider_before + 400
    assert bazaar.usd_of(buyer) == buyer_before
    result = bazaar.client.unit_result(job_id, unit)
    assert (result.verdict, result.recomputed_hash, result.verifier) == (
        Verdict.OK,
        bazaar.result_of(f"honest:{unit}"),
        verifier.address,
    )
    job = bazaar.client.job(job_id)
    assert (job.status, job.paid_units, job.paid, job.escrow, job.verified_units) == (JobStatus.SETTLED, 4, 400, 0, 1)
    bazaar.assert_escrow_balanced()


def test_every_sampled_unit_must_pass_before_the_job_pays(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar, units=8)
    first, second = bazaar.client.draw_sample(buyer, job_id)  # the buyer may verify its own job
    bazaar.client.verify_unit(buyer, job_id, first, True)
    assert bazaar.client.job(job_id).status == JobStatus.VERIFYING
    bazaar.client.verify_unit(buyer, job_id, second, True)
    assert bazaar.client.job(job_id).status == JobStatus.SETTLED


def test_a_wrong_result_slashes_the_provider_and_reposts_the_work(bazaar) -> None:
    buyer, cheat, job_id = committed_job(bazaar, units=4, price=10, max_price=20)
    (unit,) = bazaar.client.draw_sample(buyer, job_id)
    buyer_before = bazaar.usd_of(buyer)

    receipt = bazaar.client.verify_unit_hash(buyer, job_id, unit, bazaar.result_of("what the verifier got"))

    (verified,) = bazaar.events("UnitVerified", receipt)
    assert not verified["ok"]
    (slash,) = bazaar.events("ProviderSlashed", receipt)
    assert (slash["provider"], slash["slashed"], slash["reason"]) == (
        cheat.address,
        WRONG_RESULT_SLASH,
        "market: wrong result",
    )
    assert bazaar.stake_of(cheat) == MIN_STAKE - WRONG_RESULT_SLASH
    (settled,) = bazaar.events("JobSettled", receipt)
    assert (settled["status"], settled["paid"], settled["paidUnits"]) == (JobStatus.REJECTED, 0, 0)
    (reposted,) = bazaar.events("JobReposted", receipt)
    # No allowance left for a top-up: the 400 USD units held re-post all four units capped at the old price.
    assert (reposted["firstUnit"], reposted["units"], reposted["escrow"], reposted["topUp"]) == (0, 4, 400, 0)
    assert bazaar.usd_of(cheat) == 0
    assert bazaar.usd_of(buyer) == buyer_before
    assert bazaar.client.unit_result(job_id, unit).verdict == Verdict.WRONG
    assert bazaar.client.job(job_id).status == JobStatus.REJECTED

    # The buyer may take the money back instead of waiting for another provider.
    bazaar.client.cancel_job(buyer, reposted["newJobId"])
    assert bazaar.usd_of(buyer) == buyer_before + 400
    bazaar.assert_escrow_balanced()


def test_an_unchecked_job_settles_optimistically_after_the_window(bazaar) -> None:
    _, provider, job_id = committed_job(bazaar, units=2, price=10, seconds_per_unit=10)
    settle = bazaar.market.functions.settle(job_id)
    assert bazaar.reverts(settle, provider) == "market: verification open"
    bazaar.advance(VERIFY_WINDOW_S + 1)
    bazaar.client.settle(provider, job_id)
    job = bazaar.client.job(job_id)
    assert (job.status, job.paid, bazaar.usd_of(provider)) == (JobStatus.SETTLED, 200, 200)


def test_verification_of_a_dead_providers_committed_units_pays_only_those(bazaar) -> None:
    buyer, dead = bazaar.buyer(100 * USD), bazaar.provider(10)
    job_id = bazaar.awarded(buyer, [(dead, 10)], units=4, max_price=10, seconds_per_unit=10, heartbeat=60)
    bazaar.client.commit_result(dead, job_id, 0, bazaar.result_of("honest:0"))
    bazaar.client.commit_result(dead, job_id, 1, bazaar.result_of("honest:1"))
    bazaar.advance(61)
    child_id = bazaar.client.report_missed_heartbeat(buyer, job_id)

    sampled = bazaar.client.draw_sample(buyer, job_id)
    assert len(sampled) == 1 and sampled[0] in (0, 1)
    bazaar.client.verify_unit_hash(buyer, job_id, sampled[0], bazaar.result_of(f"honest:{sampled[0]}"))
    job = bazaar.client.job(job_id)
    assert (job.status, job.paid_units, job.paid) == (JobStatus.SETTLED, 2, 200)
    assert bazaar.usd_of(dead) == 200
    assert bazaar.client.job(child_id).escrow == 200
    bazaar.assert_escrow_balanced()


def test_verify_reverts(bazaar) -> None:
    buyer, provider, job_id = committed_job(bazaar, units=4)
    (stranger,) = bazaar.people(1)
    fns = bazaar.market.functions
    assert bazaar.reverts(fns.verifyUnit(job_id, 0, True), buyer) == "market: sample not drawn"
    (unit,) = bazaar.client.draw_sample(buyer, job_id)
    other = (unit + 1) % 4
    assert bazaar.reverts(fns.verifyUnit(job_id, unit, True), stranger) == "market: not a verifier"
    assert bazaar.reverts(fns.verifyUnit(job_id, unit, True), provider) == "market: not a verifier"
    assert bazaar.reverts(fns.verifyUnit(job_id, other, True), buyer) == "market: unit not sampled"
    assert bazaar.reverts(fns.verifyUnitHash(job_id, unit, b"\x00" * 32), buyer) == "market: empty result"
    assert bazaar.reverts(fns.verifyUnit(999, unit, True), buyer) == "market: unknown job"

    bazaar.client.set_verifier(bazaar.owner, stranger.address)
    bazaar.client.verify_unit(stranger, job_id, unit, True)
    assert bazaar.reverts(fns.verifyUnit(job_id, unit, True), buyer) == "market: not verifying"
    assert bazaar.reverts(fns.drawSample(job_id), buyer) == "market: not verifying"
    assert bazaar.reverts(fns.settle(job_id), buyer) == "market: not verifying"


def test_a_unit_is_judged_once(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar, units=8)
    first, _second = bazaar.client.draw_sample(buyer, job_id)
    bazaar.client.verify_unit(buyer, job_id, first, True)
    assert bazaar.reverts(bazaar.market.functions.verifyUnit(job_id, first, True), buyer) == (
        "market: unit already verified"
    )


def test_a_sample_block_older_than_256_blocks_is_replaced_by_a_fresh_one(bazaar) -> None:
    buyer, _, job_id = committed_job(bazaar, units=2)
    bazaar.chain.w3.provider.make_request("anvil_mine", [hex(300)])
    receipt = bazaar.send(bazaar.market.functions.drawSample(job_id), buyer)
    (moved,) = bazaar.events("SampleReanchored", receipt)
    assert moved["sampleBlock"] == receipt["blockNumber"] + 1
    assert not bazaar.client.job(job_id).sample_drawn
    assert len(bazaar.client.draw_sample(buyer, job_id)) == 1


def test_only_the_owner_sets_verifiers_and_parameters(bazaar) -> None:
    (mallory,) = bazaar.people(1)
    fns = bazaar.market.functions
    assert bazaar.reverts(fns.setVerifier(mallory.address, True), mallory) == "ownable: caller is not the owner"
    assert bazaar.reverts(fns.setParams(0, 0, 0, 100, 10), mallory) == "ownable: caller is not the owner"
    assert bazaar.reverts(fns.setVerifier("0x" + "00" * 20, True), bazaar.owner) == (
        "market: verifier is the zero address"
    )
    receipt = bazaar.client.set_verifier(bazaar.owner, mallory.address)
    assert bazaar.events("VerifierSet", receipt) == [{"verifier": mallory.address, "enabled": True}]
    assert bazaar.client.is_verifier(mallory.address)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((0, 0, 0, 0, 10), "market: sample rate out of bounds"),
        ((0, 0, 0, 10_001, 10), "market: sample rate out of bounds"),
        ((0, 0, 0, 100, 0), "market: verify window out of bounds"),
        ((0, 0, 0, 100, 31 * 86_400), "market: verify window out of bounds"),
    ],
)
def test_set_params_bounds(bazaar, args: tuple, reason: str) -> None:
    assert bazaar.reverts(bazaar.market.functions.setParams(*args), bazaar.owner) == reason


def test_the_owner_retunes_the_market(bazaar) -> None:
    receipt = bazaar.send(bazaar.market.functions.setParams(1, 2, 3, 10_000, 60), bazaar.owner)
    (event,) = bazaar.events("ParamsSet", receipt)
    assert event == {
        "minProviderStake": 1,
        "heartbeatSlash": 2,
        "wrongResultSlash": 3,
        "sampleRateBps": 10_000,
        "verifyWindow": 60,
    }
    buyer, _, job_id = committed_job(bazaar, units=3)
    assert sorted(bazaar.client.draw_sample(buyer, job_id)) == [0, 1, 2]  # a 100% rate re-runs everything
