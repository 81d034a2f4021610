"""Declared resources are enforced: a unit gets the memory, cores and GPUs its job declared, and no more.

A unit over its memory fails at once with a one-line error that is its result (a failed unit the buyer can
read and the verifier re-runs to the same hash), not a hang; a provider never offers or bids for more than
its machine and its offer hold.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from covey.chain import Chain
from covey.compute.client import JobStatus, JobTerms, MarketClient, Resources, delivered_units
from covey.compute.errors import RentalError
from covey.compute.jobs import CommandJob, UnitLimits, fetch_result, publish_job
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.rental import rent_training
from covey.compute.sandbox import Limits, Sandbox, machine_capacity
from covey.compute.verifier import VerifierAgent
from covey.errors import ValidationError
from covey.ml import default_spec

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV
HOG = b"""hog = bytearray(1 << 30)  # 1 GiB, far over the 256 MiB the job declared
open("out.txt", "w").write("never reached")
"""
REPORT = b"""import json, os
json.dump({"cpus": len(os.sched_getaffinity(0)), "omp": os.environ["OMP_NUM_THREADS"],
           "gpus": os.environ["CUDA_VISIBLE_DEVICES"]}, open("env.json", "w"))
"""


def provider_agent(bazaar, store, tmp_path: Path, resources: Resources) -> ProviderAgent:
    (account,) = bazaar.people(1)
    bazaar.stake(account, MIN_STAKE)
    agent = ProviderAgent(
        bazaar.client,
        account,
        store,
        resources=resources,
        pricing=PricingRule(10),
        sandbox=Sandbox(store, root=tmp_path / f"sandbox-{account.address[:8]}"),
        log=print,
    )
    agent.register()
    return agent


def post_command(bazaar, store, program: bytes, output: str, needs: Resources):
    """Post a one-unit command job needing `needs`; return its id and its buyer."""
    job = CommandJob(
        argv=["python", "prog.py"],
        inputs={"prog.py": store.put(program).digest},
        outputs=[output],
        limits=UnitLimits(cpu_seconds=60, memory_mb=4096, wall_clock_s=120),
    )
    terms = JobTerms(publish_job(store, job).bytes32, 1, 20, 10, needs, bid_window_s=30, heartbeat_interval_s=600)
    buyer = bazaar.buyer(10 * USD)
    return bazaar.client.post_job(buyer, terms), buyer


def test_a_unit_over_its_memory_fails_at_once_with_a_clear_error(store, sandbox_root: Path) -> None:
    sandbox = Sandbox(store, root=sandbox_root)
    limits = Limits(cpu_seconds=60, wall_clock_s=60).for_needs(cpu_cores=1, memory_mb=256, gpus=0)

    started = time.monotonic()
    result = sandbox.run(["python", "-c", HOG.decode()], outputs=["out.txt"], limits=limits)

    assert time.monotonic() - started < 20 and not result.timed_out  # failed, did not hang
    assert not result.ok and result.returncode == 1 and "MemoryError" in result.stderr_tail
    assert result.error == "out of memory: the unit exceeded its 256 MiB memory limit"
    assert result.missing == ["out.txt"]


def test_a_unit_runs_on_its_declared_cores_and_sees_only_its_declared_gpus(store, sandbox_root: Path) -> None:
    sandbox = Sandbox(store, root=sandbox_root)
    limits = Limits(cpu_seconds=60, wall_clock_s=60).for_needs(cpu_cores=1, memory_mb=512, gpus=0)
    result = sandbox.run(["python", "-c", REPORT.decode()], outputs=["env.json"], limits=limits)
    assert result.ok, result.stderr_tail
    assert json.loads(result.outputs["env.json"]) == {"cpus": 1, "omp": "1", "gpus": ""}


def test_an_offer_larger_than_the_machine_is_refused(bazaar, store) -> None:
    cores, memory_mb, gpus = machine_capacity()
    (account,) = bazaar.people(1)
    too_big = [Resources(cores + 1, 1024, 0), Resources(1, memory_mb + 1024, 0)]
    if gpus == 0:
        too_big.append(Resources(1, 1024, 1))
    for resources in too_big:
        with pytest.raises(ValidationError, match=r"cannot offer .* but this machine has"):
            ProviderAgent(bazaar.client, account, store, resources=resources, pricing=PricingRule(10))
    if gpus == 0:
        with pytest.raises(ValidationError, match="1 GPUs offered but this machine has 0"):
            ProviderAgent(bazaar.client, account, store, resources=Resources(1, 1024, 1), pricing=PricingRule(10))


def test_a_provider_does_not_bid_for_a_job_that_needs_more_than_it_offers(bazaar, store, tmp_path: Path) -> None:
    provider = provider_agent(bazaar, store, tmp_path, Resources(1, 1024, 0))
    needs_more = [Resources(2, 512, 0), Resources(1, 2048, 0), Resources(1, 512, 1)]
    jobs = [post_command(bazaar, store, REPORT, "env.json", needs)[0] for needs in needs_more]
    fits, _ = post_command(bazaar, store, REPORT, "env.json", Resources(1, 512, 0))

    provider.step()

    assert [len(bazaar.client.bids(job_id)) for job_id in jobs] == [0, 0, 0]
    assert [bid.provider for bid in bazaar.client.bids(fits)] == [provider.address]


def test_a_market_job_over_its_declared_memory_is_a_failed_unit_not_a_hang(bazaar, store, tmp_path: Path) -> None:
    provider = provider_agent(bazaar, store, tmp_path, Resources(2, 2048, 0))
    job_id, buyer = post_command(bazaar, store, HOG, "out.txt", Resources(1, 256, 0))
    provider.step()  # bids
    bazaar.advance_past_bidding(job_id)

    started = time.monotonic()
    provider.step()  # awards itself and runs the unit, which dies of its memory limit
    assert time.monotonic() - started < 30

    job = bazaar.client.job(job_id)
    assert (job.status, job.committed_units) == (JobStatus.VERIFYING, 1)
    (output,) = delivered_units(bazaar.client, job_id, verified_only=False).values()
    manifest = fetch_result(store, output.result_hash)
    assert manifest["exit_code"] == 1 and manifest["outputs"] == {} and manifest["missing"] == ["out.txt"]
    assert manifest["error"] == "out of memory: the unit exceeded its 256 MiB memory limit"

    # The buyer's verifier re-runs it under the same declared limit and reaches the same failed result:
    # the provider did the work honestly and is paid; the buyer under-declared.
    verifier = VerifierAgent(bazaar.client, buyer, store, sandbox=Sandbox(store, root=tmp_path / "verifier"))
    (check,) = verifier.verify_job(bazaar.client.job(job_id))
    assert check.ok and check.detail == "same result hash"
    assert bazaar.client.job(job_id).status == JobStatus.SETTLED


def test_a_rented_training_unit_that_runs_out_of_memory_comes_back_as_a_clear_failure(
    bazaar, store, anvil_url: str, tmp_path: Path
) -> None:
    (account,) = bazaar.people(1)
    bazaar.stake(account, MIN_STAKE)
    provider = ProviderAgent(
        MarketClient.from_deployment(Chain.from_rpc(anvil_url), bazaar.deployment),  # its own connection
        account,
        store,
        resources=Resources(1, 2048, 0),
        pricing=PricingRule(10),
        sandbox=Sandbox(store, root=tmp_path / "provider"),
        log=print,
    )
    spec = default_spec("digits", train={"epochs": 1, "lr": 3e-3, "batch_size": 64, "max_steps": 15})
    stop = threading.Event()
    thread = threading.Thread(target=provider.run, args=(stop,), kwargs={"poll_s": 0.3}, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(
            RentalError, match=r"job \d+ unit 0 failed on provider 0x[0-9a-fA-F]+: out of memory"
        ) as info:
            rent_training(
                bazaar.chain,
                bazaar.deployment,
                store,
                store.put(spec.to_bytes()).digest,
                {"seed": 3},
                bazaar.buyer(100 * USD),
                needs=Resources(1, 128, 0),  # torch alone needs more
                bid_window_s=3,
                timeout_s=120,
            )
    finally:
        stop.set()
        thread.join(timeout=60)
    assert str(info.value).endswith("the unit exceeded its 128 MiB memory limit")
    assert time.monotonic() - started < 60  # reported, not waited out
