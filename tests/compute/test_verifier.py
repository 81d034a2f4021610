"""The verifier's judgement for jobs that are not bitwise reproducible: outputs compared within a tolerance."""

from __future__ import annotations

from covey.compute.client import JobStatus, JobTerms, Resources
from covey.compute.jobs import CommandJob, publish_job
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.sandbox import Sandbox
from covey.compute.verifier import VerifierAgent

COV = 10**18
USD = 10**6
# A measurement with a little run-to-run noise: never the same bytes twice, always close.
NOISY = b"""import json, os
noise = int.from_bytes(os.urandom(2), "big") / 65536 * 1e-4
json.dump({"loss": 0.25 + noise, "steps": 10}, open("metrics.json", "w"))
"""


def run_noisy_job(bazaar, store, tmp_path, tolerance: float):
    program = store.put(NOISY)
    job = CommandJob(
        argv=["python", "p.py"],
        inputs={"p.py": program.digest},
        outputs=["metrics.json"],
        compare="tolerance",
        tolerance=tolerance,
    )
    (account,) = bazaar.people(1)
    bazaar.stake(account, 100 * COV)
    provider = ProviderAgent(
        bazaar.client,
        account,
        store,
        resources=Resources(1, 1024, 0),
        pricing=PricingRule(5),
        sandbox=Sandbox(store, root=tmp_path / "p"),
    )
    provider.register()
    buyer = bazaar.buyer(10 * USD)
    spec = publish_job(store, job)
    job_id = bazaar.client.post_job(buyer, JobTerms(spec.bytes32, 1, 10, 10, Resources(1, 512, 0), 30, 600))
    provider.step()
    bazaar.advance_past_bidding(job_id)
    provider.step()
    verifier = VerifierAgent(bazaar.client, buyer, store, sandbox=Sandbox(store, root=tmp_path / "v"))
    return job_id, verifier.verify_job(bazaar.client.job(job_id))


def test_noise_within_the_tolerance_passes(bazaar, store, tmp_path) -> None:
    job_id, (check,) = run_noisy_job(bazaar, store, tmp_path, tolerance=1e-3)
    assert check.ok and "within tolerance" in check.detail and not check.by_hash
    assert bazaar.client.job(job_id).status == JobStatus.SETTLED


def test_a_difference_beyond_the_tolerance_fails(bazaar, store, tmp_path) -> None:
    job_id, (check,) = run_noisy_job(bazaar, store, tmp_path, tolerance=1e-9)
    assert not check.ok and "differs by" in check.detail
    assert bazaar.client.job(job_id).status == JobStatus.REJECTED
