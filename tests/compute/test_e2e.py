"""End to end: real provider and verifier agents (threads, sandboxed subprocesses) on a real anvil node.

A provider that dies mid-job is slashed and another finishes its units; one that cheats is caught by the
verifier's re-run and slashed; a rented training unit is re-trained bitwise by the verifier.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from covey.chain import Chain
from covey.compute.client import JobStatus, JobTerms, MarketClient, Resources, delivered_units
from covey.compute.jobs import CommandJob, UnitLimits, fetch_result, publish_job
from covey.compute.provider import Fault, PricingRule, ProviderAgent
from covey.compute.rental import rent_training
from covey.compute.sandbox import Sandbox
from covey.compute.verifier import VerifierAgent
from covey.ml import default_spec, load_weights

pytestmark = pytest.mark.e2e

COV = 10**18
USD = 10**6
MIN_STAKE = 100 * COV
HEARTBEAT_SLASH = 10 * COV
WRONG_RESULT_SLASH = 50 * COV  # the bazaar fixture's parameters
BOX = Resources(2, 2048, 0)
UNIT_PROGRAM = b"""import hashlib, sys, time
unit = int(sys.argv[1])
time.sleep(0.3)  # a little work to interrupt
open("out.txt", "w").write(hashlib.sha256(b"unit %d" % unit).hexdigest())
"""


def expected_output(unit: int) -> bytes:
    return hashlib.sha256(b"unit %d" % unit).hexdigest().encode()


@pytest.fixture
def agents(bazaar, store, anvil_url: str, tmp_path: Path):
    """A factory of agents, each with its own connection, account and sandbox directory."""

    def own_client() -> MarketClient:
        return MarketClient.from_deployment(Chain.from_rpc(anvil_url), bazaar.deployment)

    def provider(price: int, fault: Fault | None = None, *, stake: bool = True) -> ProviderAgent:
        (account,) = bazaar.people(1)
        if stake:
            bazaar.stake(account, MIN_STAKE)
        sandbox = Sandbox(store, root=tmp_path / f"sandbox-{account.address[:8]}")
        agent = ProviderAgent(
            own_client(),
            account,
            store,
            resources=BOX,
            pricing=PricingRule(price),
            sandbox=sandbox,
            fault=fault,
            name=f"provider@{price}",
            log=print,
        )
        agent.register()  # on the market before any job is posted, so no bid window is missed
        return agent

    def verifier() -> VerifierAgent:
        (account,) = bazaar.people(1)
        bazaar.client.set_verifier(bazaar.owner, account.address)
        sandbox = Sandbox(store, root=tmp_path / "sandbox-verifier")
        return VerifierAgent(own_client(), account, store, sandbox=sandbox, name="verifier", log=print)

    return provider, verifier


@contextmanager
def running(agents: Sequence[ProviderAgent | VerifierAgent]) -> Iterator[None]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=agent.run, args=(stop,), kwargs={"poll_s": 0.3}, daemon=True) for agent in agents
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for agent in agents:
            if isinstance(agent, ProviderAgent):
                agent.kill()
        for thread in threads:
            thread.join(timeout=30)


def wait_until(condition, timeout_s: float = 300.0) -> None:
    """Wait for `condition`; generous, since a loaded machine stretches every step of a story."""
    from covey.compute.provider import wait_for

    assert wait_for(condition, timeout_s, poll_s=0.5), "timed out"


def command_job(store, units: int) -> CommandJob:
    program = store.put(UNIT_PROGRAM)
    return CommandJob(
        argv=["python", "prog.py", "{unit}"],
        inputs={"prog.py": program.digest},
        outputs=["out.txt"],
        units=units,
        limits=UnitLimits(cpu_seconds=20, memory_mb=1024, wall_clock_s=30),
    )


def post(bazaar, store, buyer, job: CommandJob, *, max_price: int = 20, window_s: int = 4) -> int:
    """Post `job` with a bid window and heartbeat interval of `window_s` real seconds."""
    ref = publish_job(store, job)
    terms = JobTerms(
        ref.bytes32,
        job.units,
        max_price,
        10,
        Resources(1, 1024, 0),
        bid_window_s=window_s,
        heartbeat_interval_s=window_s,
    )
    return bazaar.client.post_job(buyer, terms, extra_allowance=terms.escrow)


def assert_outputs(bazaar, store, job_id: int, units: int) -> None:
    delivered = delivered_units(bazaar.client, job_id)
    assert sorted(delivered) == list(range(units))
    for unit, output in delivered.items():
        manifest = fetch_result(store, output.result_hash)
        assert manifest["unit"] == unit and manifest["exit_code"] == 0
        assert store.get(manifest["outputs"]["out.txt"]) == expected_output(unit)


def test_a_provider_that_dies_is_slashed_and_another_finishes_its_units(bazaar, store, agents) -> None:
    make_provider, make_verifier = agents
    setup_started = time.monotonic()
    dead, healthy, verifier = make_provider(10, Fault(die_after_units=1)), make_provider(15), make_verifier()
    # The healthy provider must bid on the re-posted job within its bid window and heartbeat within its
    # interval; either takes a few transactions, like the setup above, so the windows grow with its time.
    window_s = min(30, max(4, math.ceil(3 * (time.monotonic() - setup_started))))
    buyer = bazaar.buyer(100 * USD)
    job_id = post(bazaar, store, buyer, command_job(store, 4), window_s=window_s)
    print(f"bid window and heartbeat interval: {window_s} s")

    with running([dead, healthy, verifier]):
        wait_until(lambda: len(delivered_units(bazaar.client, job_id)) == 4)

    first = bazaar.client.job(job_id)
    assert (first.provider, first.status, first.paid_units) == (dead.address, JobStatus.SETTLED, 1)
    second = bazaar.client.job(first.child_job)
    assert (second.provider, second.status, second.first_unit, second.paid_units) == (
        healthy.address,
        JobStatus.SETTLED,
        1,
        3,
    )
    # The dead provider is slashed and paid only for its one verified unit; the buyer pays for four units.
    assert bazaar.stake_of(dead.account) == MIN_STAKE - HEARTBEAT_SLASH
    assert bazaar.stake_of(healthy.account) == MIN_STAKE
    assert bazaar.usd_of(dead.account) == 1 * 10 * 10
    assert bazaar.usd_of(healthy.account) == 3 * 15 * 10
    assert bazaar.usd_of(buyer) == 100 * USD - 100 - 450
    assert_outputs(bazaar, store, job_id, 4)
    assert all(check.ok for check in verifier.checks)
    bazaar.assert_escrow_balanced()


def test_a_cheating_provider_is_caught_by_verification_and_slashed(bazaar, store, agents) -> None:
    make_provider, make_verifier = agents
    cheat, honest, verifier = make_provider(10, Fault(cheat=True)), make_provider(15), make_verifier()
    buyer = bazaar.buyer(100 * USD)
    job_id = post(bazaar, store, buyer, command_job(store, 2))

    with running([cheat, honest, verifier]):
        wait_until(lambda: len(delivered_units(bazaar.client, job_id)) == 2)

    first = bazaar.client.job(job_id)
    assert (first.provider, first.status, first.paid) == (cheat.address, JobStatus.REJECTED, 0)
    assert bazaar.stake_of(cheat.account) == MIN_STAKE - WRONG_RESULT_SLASH
    assert bazaar.usd_of(cheat.account) == 0
    assert any(not check.ok and check.job_id == job_id for check in verifier.checks)
    redo = bazaar.client.job(first.child_job)
    assert (redo.provider, redo.status, redo.units) == (honest.address, JobStatus.SETTLED, 2)
    assert bazaar.usd_of(buyer) == 100 * USD - 2 * 15 * 10
    assert_outputs(bazaar, store, job_id, 2)
    bazaar.assert_escrow_balanced()


def test_a_rented_training_unit_is_retrained_bitwise_by_the_verifier(bazaar, store, agents) -> None:
    make_provider, make_verifier = agents
    provider, verifier = make_provider(10), make_verifier()
    spec = default_spec("digits", train={"epochs": 1, "lr": 3e-3, "batch_size": 64, "max_steps": 15})
    task = store.put(spec.to_bytes())
    buyer = bazaar.buyer(100 * USD)

    with running([provider, verifier]):
        rented = rent_training(
            bazaar.chain,
            bazaar.deployment,
            store,
            task.digest,
            {"lr": 3e-3, "seed": 7},
            buyer,
            bid_window_s=3,
            heartbeat_interval_s=60,
            wait_verified=True,
            timeout_s=300,
        )

    model = load_weights(spec.build_model(), rented.weights)
    assert model is not None and rented.weights_ref.size == len(rented.weights)
    (check,) = verifier.checks
    assert check.ok and check.detail == "same result hash"
    assert bazaar.client.job(rented.job_id).status == JobStatus.SETTLED
