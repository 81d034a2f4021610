"""`ProviderAgent`, the loop behind `covey provider run`: offer capacity, bid, run awarded units, commit, heartbeat.

Each `step` reads the Market and acts: bid on open jobs it can run (by its `PricingRule`), award jobs
whose window closed, run the units of jobs it won in the sandbox (a thread sends heartbeats meanwhile),
upload outputs and commit each unit's result hash, settle its own jobs nobody verified in time, and, as
a watchdog, report other providers' missed heartbeats (the re-posted work is then up for bidding).
`Fault` makes the faulty providers that tests and the demo need: one that dies mid-job, one that cheats.
At start the agent finds out, once, how its sandbox isolates units and says so; without namespace isolation
it refuses compute-to-data jobs (and says why). It runs a compute-to-data job only for an algorithm the data
owner approved, and a job that wants the network only at its `PricingRule`'s network premium.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from covey.chain import reverts
from covey.compute.c2d import PrivateDataset
from covey.compute.client import MarketClient
from covey.compute.errors import NotApproved
from covey.compute.offers import PricingRule, check_machine_has
from covey.compute.records import Job, JobStatus
from covey.compute.resources import Resources
from covey.compute.sandbox import Sandbox
from covey.compute.specs import CommandJob, TrainingJob, fetch_job
from covey.compute.units import WEIGHTS_OUTPUT, run_unit
from covey.errors import ChainError, CoveyError
from covey.storage import ArtifactStore

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Fault:
    """A deliberately faulty provider: dies after committing `die_after_units` units of a job, or cheats."""

    die_after_units: int | None = None
    cheat: bool = False


@dataclass
class ProviderStats:
    """What a provider did, for logs and the demo."""

    bids: int = 0
    jobs_won: int = 0
    units_run: int = 0
    unit_seconds: float = 0.0
    reports: int = 0
    job_ids: list[int] = field(default_factory=list)


class ProviderAgent:
    """One provider account working the Market; `step()` is safe to call repeatedly."""

    def __init__(
        self,
        client: MarketClient,
        account: LocalAccount,
        store: ArtifactStore,
        *,
        resources: Resources,
        pricing: PricingRule,
        sandbox: Sandbox | None = None,
        datasets: Sequence[PrivateDataset] = (),
        name: str | None = None,
        log: Log | None = None,
        watchdog: bool = True,
        fault: Fault | None = None,
    ) -> None:
        check_machine_has(resources)
        self.client = client
        self.account = account
        self.address = account.address
        self.store = store
        self.resources = resources
        self.pricing = pricing
        self.sandbox = sandbox or Sandbox(store)
        self.datasets = {dataset.digest: dataset for dataset in datasets}
        self.name = name or f"provider {self.address[:10]}"
        self.log = log or _quiet
        self.watchdog = watchdog
        self.fault = fault or Fault()
        self.stats = ProviderStats()
        # Tried once, now: how units will be isolated here decides which jobs this provider may take.
        self.isolation = self.sandbox.probe()
        self.log(f"{self.name}: units run with {self.isolation.describe()}")
        if self.datasets and not self.isolation.namespaces:
            self.log(f"{self.name}: refusing compute-to-data: it needs namespace isolation ({self.isolation.detail})")
        self._dead = threading.Event()
        self._cancel = threading.Event()
        self._cursor = 1
        self._unrunnable: set[int] = set()
        self._stake_ok: bool | None = None
        self._warned_stake = False

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def dead(self) -> bool:
        return self._dead.is_set()

    def register(self) -> None:
        """Register (or update) this provider's offer at its floor price."""
        offer = self.client.offer(self.address)
        if (
            offer is None
            or not offer.active
            or offer.resources != self.resources
            or offer.price_per_unit_second != self.pricing.floor
        ):
            self.client.register_offer(self.account, self.resources, self.pricing.floor)
            self.log(f"{self.name}: offering {self._describe_resources()} at {self.pricing.floor} µUSD/unit-s")

    def kill(self) -> None:
        """Die on the spot, like `kill -9`: the running unit is killed, no heartbeat or commit follows."""
        self._dead.set()
        self._cancel.set()

    def run(self, stop: threading.Event | None = None, *, poll_s: float = 0.5, max_jobs: int | None = None) -> None:
        """Register, then step until `stop` is set, the agent dies, or it has finished `max_jobs` jobs."""
        stop = stop or threading.Event()
        self.register()
        while not stop.is_set() and not self.dead:
            try:
                self.step()
            except CoveyError as exc:  # one bad job or a flaky node must not end the loop
                self.log(f"{self.name}: {exc}")
            # `work` runs a won job to its end inside `step`, so a counted job is a finished one.
            if max_jobs is not None and self.stats.jobs_won >= max_jobs:
                return
            stop.wait(poll_s)

    # -- one pass -------------------------------------------------------------------------------------

    def step(self) -> None:
        """Act once on every job that is not finished."""
        if self.dead:
            return
        now = self.client.now()
        self._stake_ok = None
        for job in self._live_jobs():
            if self.dead:
                return
            if job.status == JobStatus.OPEN:
                self._on_open(job, now)
            elif job.status == JobStatus.RUNNING:
                if job.provider == self.address:
                    self.work(job)
                elif self.watchdog and now > job.heartbeat_deadline:
                    self._report(job)
            elif job.status == JobStatus.VERIFYING and job.provider == self.address and now > job.verify_deadline:
                self._settle(job.job_id)

    def _settle(self, job_id: int) -> None:
        """Nobody verified our job in time: claim the pay (optimistic settlement)."""
        if self._try(lambda: self.client.settle(self.account, job_id), "settle"):
            self.log(f"{self.name}: job {job_id} settled unchecked after the verification window")

    def _on_open(self, job: Job, now: int) -> None:
        bids = self.client.bids(job.job_id)
        mine = any(bid.provider == self.address for bid in bids)
        if now >= job.bid_deadline:
            if mine and self._try(lambda: self.client.award(self.account, job.job_id), "award"):
                awarded = self.client.job(job.job_id)
                if awarded.provider == self.address:
                    self.work(awarded)
            return
        if mine or job.job_id in self._unrunnable or not self.resources.fits(job.needs):
            return
        spec = self._runnable_spec(job)
        if spec is None:
            self._unrunnable.add(job.job_id)
            return
        if not self._has_enough_stake():
            return
        price = self.pricing.bid_for(job, bids, network=isinstance(spec, CommandJob) and spec.network)
        if price is None:
            return
        if self._try(lambda: self.client.bid(self.account, job.job_id, price), "bid"):
            self.stats.bids += 1
            self.log(f"{self.name}: bid {price} µUSD/unit-s on job {job.job_id} ({job.units} units)")

    def _report(self, job: Job) -> None:
        try:
            new_job = self.client.report_missed_heartbeat(self.account, job.job_id)
        except ChainError as exc:  # another watchdog was first, or the provider beat just in time
            self.log(f"{self.name}: report failed: {exc.reason or exc}")
            return
        self.stats.reports += 1
        self.log(
            f"{self.name}: provider {job.provider[:10]} missed its heartbeat on job {job.job_id}; "
            f"{job.units - job.committed_units} units re-posted as job {new_job}"
        )

    # -- running a job --------------------------------------------------------------------------------

    def work(self, job: Job) -> None:
        """Run the remaining units of a job this provider won, with heartbeats from a thread."""
        if job.job_id not in self.stats.job_ids:
            self.stats.job_ids.append(job.job_id)
            self.stats.jobs_won += 1
            self.log(
                f"{self.name}: won job {job.job_id} at {job.price_per_unit_second} µUSD/unit-s; running "
                f"{job.units - job.committed_units} units"
            )
        spec = fetch_job(self.store, job.spec_digest)
        beats = threading.Event()
        beater = threading.Thread(
            target=self._heartbeats, args=(job, beats), name=f"heartbeat-{job.job_id}", daemon=True
        )
        beater.start()
        try:
            committed = job.committed_units
            for unit in range(job.committed_units, job.units):
                if self.dead:
                    return
                result_hash = self._produce(spec, job, unit)
                if self.dead or result_hash is None:
                    return
                self.client.commit_result(self.account, job.job_id, unit, result_hash)
                committed += 1
                self.log(
                    f"{self.name}: job {job.job_id} unit {unit + 1}/{job.units} committed ({result_hash.hex()[:12]}…)"
                )
                if self.fault.die_after_units is not None and committed >= self.fault.die_after_units:
                    self.log(f"{self.name}: dies (fault injected)")
                    self.kill()
                    return
        finally:
            beats.set()
            beater.join(timeout=5)

    def _produce(self, spec: TrainingJob | CommandJob, job: Job, unit: int) -> bytes | None:
        """The result hash of one unit: run it, or, for a cheating provider, make one up."""
        spec_unit = job.first_unit + unit
        if self.fault.cheat:
            # Skip the work: publish random bytes under the declared output names and commit that.
            names = spec.outputs if isinstance(spec, CommandJob) else [WEIGHTS_OUTPUT]
            junk = self.store.put(os.urandom(64))
            manifest = {"job": job.spec_digest, "unit": spec_unit, "outputs": dict.fromkeys(names, junk.digest)}
            return bytes.fromhex(self.store.put(json.dumps(manifest, sort_keys=True).encode()).digest)
        dataset = self.datasets.get(spec.private_data) if isinstance(spec, CommandJob) and spec.private_data else None
        outcome = run_unit(
            self.sandbox,
            spec,
            job.spec_digest,
            spec_unit,
            private_data={dataset.digest: dataset.path} if dataset else None,
            # `output_filter(spec)` raises `NotApproved` for an algorithm the owner did not approve.
            output_filter=dataset.output_filter(spec) if dataset and isinstance(spec, CommandJob) else None,
            cancel=self._cancel,
            needs=job.needs,
        )
        if outcome.sandbox.cancelled:
            return None
        self.stats.units_run += 1
        self.stats.unit_seconds += outcome.sandbox.wall_s
        if not outcome.sandbox.ok:
            # The failure is the unit's result (the buyer reads `error` in it); the work was done honestly.
            self.log(
                f"{self.name}: job {job.job_id} unit {unit} failed ({outcome.sandbox.error or 'missing outputs'}): "
                f"{outcome.sandbox.stderr_tail[-300:]}"
            )
        return outcome.result_hash

    def _heartbeats(self, job: Job, done: threading.Event) -> None:
        """Beat three times per interval, so one slow transaction never costs the job."""
        every_s = max(0.5, job.heartbeat_interval / 3)
        while not done.wait(every_s):
            if self.dead:
                return
            try:
                self.client.heartbeat(self.account, job.job_id)
            except ChainError as exc:
                self.log(f"{self.name}: heartbeat for job {job.job_id} failed: {exc.reason or exc}")
                if exc.reason in (reverts.MARKET_NOT_RUNNING, reverts.MARKET_HEARTBEAT_MISSED):
                    return

    # -- helpers --------------------------------------------------------------------------------------

    def _runnable_spec(self, job: Job) -> TrainingJob | CommandJob | None:
        """The job's spec if this provider may run it: in the store, parseable, and for compute-to-data on data
        it holds, with the algorithm approved and namespace isolation here. Refusals are logged with the reason."""
        try:
            spec = fetch_job(self.store, job.spec_digest)
        except CoveyError as exc:
            self.log(f"{self.name}: skipping job {job.job_id}: {exc}")
            return None
        if job.first_unit + job.units > spec.unit_count:
            return None
        if job.parent_job and self.client.job(job.parent_job).provider == self.address:
            return None  # the Market bars a provider from the re-post of work it failed
        if not isinstance(spec, CommandJob) or spec.private_data is None:
            return spec
        dataset = self.datasets.get(spec.private_data)
        if dataset is None:
            return None
        if not self.isolation.namespaces:
            self.log(
                f"{self.name}: refusing compute-to-data job {job.job_id}: it must run in namespace isolation, "
                f"which is not available here ({self.isolation.detail})"
            )
            return None
        try:
            dataset.admit(spec)
        except NotApproved as exc:
            self.log(f"{self.name}: refusing compute-to-data job {job.job_id}: {exc}")
            return None
        return spec

    def _has_enough_stake(self) -> bool:
        """Whether this provider may bid at all (checked once per step; a slash can end it)."""
        if self._stake_ok is None:
            self._stake_ok = self.client.provider_stake(self.address) >= self.client.params().min_provider_stake
            if not self._stake_ok and not self._warned_stake:
                self.log(f"{self.name}: provider stake below the market minimum; not bidding")
            self._warned_stake = not self._stake_ok
        return self._stake_ok

    def _live_jobs(self) -> list[Job]:
        """Jobs from the first unfinished one on; the cursor skips the finished prefix next time."""
        jobs = self.client.jobs(since=self._cursor)
        for job in jobs:
            if job.status.finished and job.job_id == self._cursor:
                self._cursor += 1
        return [job for job in jobs if not job.status.finished]

    def _try(self, action: Callable[[], object], what: str) -> bool:
        """Send a transaction; a revert (someone else was first, the window moved) is logged, not raised."""
        try:
            action()
            return True
        except ChainError as exc:
            self.log(f"{self.name}: {what} failed: {exc.reason or exc}")
            return False

    def _describe_resources(self) -> str:
        r = self.resources
        return f"{r.cpu_cores} CPU, {r.memory_mb} MiB, {r.gpus} GPU"


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()
