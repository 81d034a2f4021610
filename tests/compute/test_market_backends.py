"""One whole job on both backends (the embedded chain and anvil): post, bid, award, run, sample, verify, pay."""

from __future__ import annotations

from covey.chain import Chain
from covey.compute.client import JobStatus, Verdict

USD = 10**6


def test_a_job_from_post_to_payment(fresh_bazaar, chain: Chain) -> None:
    bazaar = fresh_bazaar
    buyer, provider = bazaar.buyer(10 * USD), bazaar.provider(12)
    job_id = bazaar.post(buyer, units=3, max_price=20, seconds_per_unit=5, bid_window=30, heartbeat=120)
    assert bazaar.client.now() >= chain.timestamp()

    bazaar.client.bid(provider, job_id, 12)
    bazaar.advance_past_bidding(job_id)
    bazaar.client.award(buyer, job_id)
    bazaar.client.heartbeat(provider, job_id)
    bazaar.commit_all(provider, job_id)
    (unit,) = bazaar.client.draw_sample(buyer, job_id)  # mines the sample block itself on a dev chain
    bazaar.client.verify_unit_hash(buyer, job_id, unit, bazaar.result_of(f"honest:{unit}"))

    job = bazaar.client.job(job_id)
    assert (job.status, job.paid, job.paid_units) == (JobStatus.SETTLED, 3 * 12 * 5, 3)
    assert bazaar.client.unit_result(job_id, unit).verdict == Verdict.OK
    assert bazaar.usd_of(provider) == 180
    assert bazaar.usd_of(buyer) == 10 * USD - 180
    bazaar.assert_escrow_balanced()
