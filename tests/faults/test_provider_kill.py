"""SIGKILL a compute provider (`covey provider run`) in the middle of a unit: the job is finished by the market's rules.

Two providers run as their own processes against `covey chain serve`, sharing an artifact store with the
buyer. A is the cheaper, so it wins a three-unit job; it commits unit 0 and is SIGKILLed two-thirds of a
second into unit 1 (each unit takes two seconds). Then, by the Market's rules:

- A's heartbeats stop; after the job's heartbeat interval a watchdog (B, or the buyer's verifier) reports
  it: A is slashed `heartbeatSlash` COV (sent to the Treasury), its committed unit goes to verification
  and the two uncommitted units are re-posted as a child job funded from the escrow;
- B wins the re-post (A may not bid on it) and runs units 1 and 2; the buyer's verifier re-runs a sample
  of each job, and both settle: A is paid for unit 0 only, B for units 1 and 2, every unit exactly once;
- the buyer pays exactly those three units, the Market holds exactly its open escrows, and every unit's
  output is in the store;
- A, started again (topping its stake back up), wins and runs the next job.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import SUITE_STEPS, deploy_suite, manifest_path
from covey.chain.faucet import fund
from covey.chain.market_deploy import MARKET_STEPS
from covey.compute.client import JobStatus, JobTerms, MarketClient, Resources, delivered_units
from covey.compute.jobs import CommandJob, UnitLimits, fetch_result, publish_job
from covey.compute.sandbox import Sandbox
from covey.compute.verifier import VerifierAgent
from covey.storage import LocalStore

from .conftest import COVEY, Service, chain_server, covey_env, service, wait_for

pytestmark = pytest.mark.e2e

COV = 10**18
UNIT_SECONDS = 2.0
UNITS = 3
SECONDS_PER_UNIT = 10  # what the buyer pays for: price x units x seconds per unit
MAX_PRICE = 20  # µUSD per unit-second
A_PRICE, B_PRICE = 10, 15
BID_WINDOW_S = 10
HEARTBEAT_S = 8
UNIT_PROGRAM = f"""import hashlib, sys, time
unit = int(sys.argv[1])
time.sleep({UNIT_SECONDS})  # work to interrupt
open("out.txt", "w").write(hashlib.sha256(b"unit %d" % unit).hexdigest())
""".encode()


def expected_output(unit: int) -> bytes:
    return hashlib.sha256(b"unit %d" % unit).hexdigest().encode()


def provider_home(tmp_path: Path, name: str, covey_home: Path, chain: Chain) -> Path:
    """A provider's own data directory: it knows only the deployment (and shares compiled contracts)."""
    home = tmp_path / f"home-{name}"
    (home / "deployments").mkdir(parents=True)
    shutil.copy(manifest_path(chain.chain_id), home / "deployments")
    (home / "cache").mkdir()
    (home / "cache" / "contracts").symlink_to((covey_home / "cache" / "contracts").resolve())
    return home


def logged(service: Service) -> list[str]:
    """The provider's `--json` log messages so far."""
    lines = service.log.read_text(errors="replace").splitlines() if service.log.exists() else []
    return [json.loads(line)["log"] for line in lines if line.startswith('{"log"')]


@contextmanager
def provider(
    name: str, price: int, home: Path, store: Path, url: str, client: MarketClient, account: LocalAccount, log: Path
) -> Iterator[Service]:
    """`covey provider run` for dev account `name` at `price` µUSD per unit-second; yields once its offer is up."""
    argv = [*COVEY, "provider", "run", "--price", f"{price / 10**6:.6f}", "--cpu", "1", "--memory-mb", "1024"]
    argv += ["--stake", "100", "--poll", "0.3", "--from", name, "--json", "--workdir", str(home / "sandbox")]
    env = covey_env(home, rpc_url=url, COVEY_STORE_URL=str(store))

    def offered() -> bool:
        offer = client.offer(account.address)
        return bool(offer and offer.active and client.provider_stake(account.address) >= 100 * COV)

    with service(f"provider {name}", argv, env, log, offered, timeout_s=180) as running:
        yield running


def post(client: MarketClient, store: LocalStore, buyer: LocalAccount, units: int) -> int:
    program = store.put(UNIT_PROGRAM)
    job = CommandJob(
        argv=["python", "prog.py", "{unit}"],
        inputs={"prog.py": program.digest},
        outputs=["out.txt"],
        units=units,
        limits=UnitLimits(cpu_seconds=20, memory_mb=512, wall_clock_s=30),
    )
    ref = publish_job(store, job)
    terms = JobTerms(ref.bytes32, units, MAX_PRICE, SECONDS_PER_UNIT, Resources(1, 512, 0), BID_WINDOW_S, HEARTBEAT_S)
    return client.post_job(buyer, terms, extra_allowance=terms.escrow)  # the allowance covers a re-post's top-up


def settled_events(client: MarketClient) -> dict[int, int]:
    """How many `JobSettled` events each job has."""
    counts: dict[int, int] = {}
    for event in client.market.events.JobSettled().get_logs(from_block=0):
        counts[int(event["args"]["jobId"])] = counts.get(int(event["args"]["jobId"]), 0) + 1
    return counts


def test_a_provider_killed_mid_unit_is_slashed_and_its_job_still_completes_once(
    covey_home: Path, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    with chain_server(covey_home, tmp_path / "chain.log") as (_chain, url):
        chain = Chain.from_rpc(url)
        owner = dev_accounts(1)[0]
        deployment = deploy_suite(chain, owner, steps=[*SUITE_STEPS, *MARKET_STEPS])
        client = MarketClient.from_deployment(chain, deployment)
        params = client.params()
        accounts = dev_accounts(8)
        a, b, buyer = accounts[5], accounts[6], accounts[7]
        for account in (a, b, buyer):
            fund(chain, deployment, account.address)
        usd = {who: client.usd_balance(who.address) for who in (a, b, buyer)}
        cov, treasury = deployment.contract(chain, "CoveyToken"), deployment.address("Treasury")
        treasury_cov = int(cov.functions.balanceOf(treasury).call())

        # The buyer checks sampled units itself (any buyer may verify its own jobs) and watches heartbeats.
        verifier = VerifierAgent(
            MarketClient.from_deployment(Chain.from_rpc(url), deployment),
            buyer,
            store,
            sandbox=Sandbox(store, root=tmp_path / "verifier-sandbox"),
            name="buyer",
            only_buyer_jobs=True,
        )
        stop = threading.Event()
        verifying = threading.Thread(target=verifier.run, args=(stop,), kwargs={"poll_s": 0.5}, daemon=True)

        homes = {name: provider_home(tmp_path, name, covey_home, chain) for name in ("dev5", "dev6")}
        a_args = ("dev5", A_PRICE, homes["dev5"], store_dir, url, client, a)
        try:
            verifying.start()
            with (
                provider(*a_args, tmp_path / "a-1.log") as first_a,
                provider("dev6", B_PRICE, homes["dev6"], store_dir, url, client, b, tmp_path / "b.log"),
            ):
                job_id = post(client, store, buyer, UNITS)

                # A wins, commits unit 0, and dies a third of the way into unit 1.
                wait_for(
                    lambda: any(f"job {job_id} unit 1/{UNITS} committed" in line for line in logged(first_a)),
                    "A to commit its first unit",
                    BID_WINDOW_S + 90,
                )
                time.sleep(UNIT_SECONDS / 3)
                first_a.sigkill()
                killed_at = time.monotonic()
                killed = client.job(job_id)
                assert (killed.provider, killed.status, killed.committed_units) == (a.address, JobStatus.RUNNING, 1)

                # A watchdog reports the missed heartbeat: slashed, unit 0 to verification, units 1-2 re-posted.
                parent = wait_for(
                    lambda: job if (job := client.job(job_id)).status != JobStatus.RUNNING else None,
                    "the missed heartbeat to be reported",
                    HEARTBEAT_S + 60,
                )
                assert parent.status in (JobStatus.VERIFYING, JobStatus.SETTLED) and parent.child_job
                assert client.provider_stake(a.address) == 100 * COV - params.heartbeat_slash
                assert int(cov.functions.balanceOf(treasury).call()) - treasury_cov == params.heartbeat_slash
                child_id = parent.child_job
                reported_s = time.monotonic() - killed_at

                # B finishes the re-posted units; the buyer's checks settle both jobs.
                with provider(*a_args, tmp_path / "a-2.log") as second_a:
                    wait_for(
                        lambda: all(client.job(j).status == JobStatus.SETTLED for j in (job_id, child_id)),
                        "both jobs to settle",
                        BID_WINDOW_S + 3 * UNIT_SECONDS + 150,
                        poll_s=0.5,
                    )
                    settled_s = time.monotonic() - killed_at
                    parent, child = client.job(job_id), client.job(child_id)
                    assert (parent.provider, parent.paid_units, parent.paid) == (
                        a.address,
                        1,
                        A_PRICE * SECONDS_PER_UNIT,
                    )
                    assert (child.provider, child.first_unit, child.units) == (b.address, 1, UNITS - 1)
                    assert (child.paid_units, child.paid) == (UNITS - 1, (UNITS - 1) * B_PRICE * SECONDS_PER_UNIT)
                    assert settled_events(client) == {job_id: 1, child_id: 1}
                    assert client.usd_balance(buyer.address) == usd[buyer] - parent.paid - child.paid
                    assert client.usd_balance(a.address) == usd[a] + parent.paid
                    assert client.usd_balance(b.address) == usd[b] + child.paid
                    outputs = delivered_units(client, job_id)
                    assert sorted(outputs) == list(range(UNITS))
                    for unit, output in outputs.items():
                        manifest = fetch_result(store, output.result_hash)
                        assert store.get(manifest["outputs"]["out.txt"]) == expected_output(unit)
                    assert client.provider_stake(a.address) == 100 * COV  # topped up on restart
                    assert client.provider_stake(b.address) == 100 * COV

                    # The restarted A is back in business: it wins and runs the next job.
                    next_id = post(client, store, buyer, 1)
                    wait_for(
                        lambda: client.job(next_id).status == JobStatus.SETTLED,
                        "the next job to settle",
                        BID_WINDOW_S + UNIT_SECONDS + 120,
                        poll_s=0.5,
                    )
                    assert (client.job(next_id).provider, client.job(next_id).paid_units) == (a.address, 1)
                    assert any(f"won job {next_id}" in line for line in logged(second_a))
        finally:
            stop.set()
            verifying.join(timeout=60)
        held = sum(job.escrow for job in client.jobs())
        assert client.total_escrow() == held == client.usd_balance(client.address)
        assert all(check.ok for check in verifier.checks) and len(verifier.checks) >= 3
    print(
        f"\nprovider kill: missed heartbeat reported {reported_s:.1f}s after the kill, both jobs settled after "
        f"{settled_s:.1f}s; {len(verifier.checks)} units re-run by the buyer"
    )
