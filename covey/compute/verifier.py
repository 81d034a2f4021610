"""`VerifierAgent`: draws each finished job's sample, re-runs the sampled units and files a verdict on chain.

Jobs that promise bitwise reproducibility (training at one deterministic torch thread, most command
jobs) are judged on chain by hash (`verifyUnitHash`): the re-run's result manifest must hash to the
committed one. Jobs with `compare="tolerance"` are judged here: the committed outputs are fetched and
compared number by number (weights tensors, or the numbers in text outputs) within the stated
tolerance, and the verdict is filed with `verifyUnit`. The agent is also a watchdog for heartbeats.
A verifier must read the artifact store the market's buyers and providers use. When it cannot re-run a
unit properly (the spec is not in its store, or its own run hit the wall-clock limit) it files no
verdict: a misconfigured or slow verifier must never slash an honest provider.
Sealed outputs (a job with `sealed_to`) seal deterministically, so a bitwise re-run reproduces the committed
hash without the buyer's key; a tolerance check must open the provider's outputs, which only the buyer (or
a verifier the buyer gave its sealing key, `sealing_keys`) can do.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount

from covey.chain import reverts
from covey.compute.c2d import PrivateDataset
from covey.compute.client import MarketClient
from covey.compute.errors import InconclusiveCheck, SandboxError, SealError
from covey.compute.records import Job, JobStatus, Verdict
from covey.compute.sandbox import Sandbox
from covey.compute.sealing import public_key_hex, sealing_key, unit_context, unseal
from covey.compute.specs import CommandJob, TrainingJob, fetch_job
from covey.compute.training import weights_distance
from covey.compute.units import UnitOutcome, fetch_result, run_unit
from covey.errors import ChainError, CoveyError, StorageError, ValidationError
from covey.storage import ArtifactStore

Log = Callable[[str], None]
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SAFETENSORS_SUFFIX = ".safetensors"


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Check:
    """One re-run unit: the job's own unit index, the verdict, and what the verifier found."""

    job_id: int
    unit: int
    ok: bool
    recomputed_hash: bytes
    detail: str
    seconds: float
    by_hash: bool = True  # filed as a hash for the contract to compare, else as a verdict


class VerifierAgent:
    """A verifier account (registered with `setVerifier`, or the job's buyer) checking sampled units."""

    def __init__(
        self,
        client: MarketClient,
        account: LocalAccount,
        store: ArtifactStore,
        *,
        sandbox: Sandbox | None = None,
        datasets: Sequence[PrivateDataset] = (),
        name: str | None = None,
        log: Log | None = None,
        watchdog: bool = True,
        only_buyer_jobs: bool = False,
        sealing_keys: Sequence[X25519PrivateKey] = (),
    ) -> None:
        self.client = client
        self.account = account
        self.address = account.address
        self.store = store
        self.sandbox = sandbox or Sandbox(store)
        self.datasets = {dataset.digest: dataset for dataset in datasets}
        self.name = name or f"verifier {self.address[:10]}"
        self.log = log or _quiet
        self.watchdog = watchdog
        self.only_buyer_jobs = only_buyer_jobs
        # Keys to open sealed outputs with: its own (for jobs it bought) and any a buyer shared with it.
        own = sealing_key(account.key)
        self.sealing_keys = {public_key_hex(key): key for key in (own, *sealing_keys)}
        self.checks: list[Check] = []
        self._cursor = 1
        self._cannot_rerun: set[int] = set()

    def run(self, stop: threading.Event, *, poll_s: float = 0.5) -> None:
        """Step until `stop` is set."""
        while not stop.is_set():
            try:
                self.step()
            except CoveyError as exc:
                self.log(f"{self.name}: {exc}")
            stop.wait(poll_s)

    def step(self) -> list[Check]:
        """Act once on every unfinished job; return the checks filed in this pass."""
        filed: list[Check] = []
        now = self.client.now()
        jobs = self.client.jobs(since=self._cursor)
        for job in jobs:
            if job.status.finished and job.job_id == self._cursor:
                self._cursor += 1
        for job in jobs:
            if job.status == JobStatus.VERIFYING and self._may_verify(job):
                filed += self.verify_job(job)
            elif job.status == JobStatus.RUNNING and self.watchdog and now > job.heartbeat_deadline:
                try:
                    new_job = self.client.report_missed_heartbeat(self.account, job.job_id)
                    self.log(f"{self.name}: job {job.job_id}'s provider went silent; the rest is job {new_job}")
                except ChainError as exc:
                    self.log(f"{self.name}: report failed: {exc.reason or exc}")
        return filed

    def verify_job(self, job: Job) -> list[Check]:
        """Draw the sample if needed, then check and file every sampled unit not judged yet."""
        if job.job_id in self._cannot_rerun:
            return []
        if self._needs_missing_data(job):
            self._cannot_rerun.add(job.job_id)
            self.log(f"{self.name}: job {job.job_id} runs next to a private data set this verifier does not hold")
            return []
        if not job.sample_drawn:
            try:
                sampled = self.client.draw_sample(self.account, job.job_id)
            except ChainError as exc:
                if exc.reason != reverts.MARKET_SAMPLE_BLOCK_NOT_MINED:
                    self.log(f"{self.name}: drawing job {job.job_id}'s sample failed: {exc.reason or exc}")
                return []
            self.log(f"{self.name}: job {job.job_id}: re-running units {sampled} of {job.committed_units}")
            job = self.client.job(job.job_id)
        filed: list[Check] = []
        for unit in job.sampled_units:
            if self.client.unit_result(job.job_id, unit).verdict != Verdict.NONE:
                continue
            try:
                check = self.check_unit(job, unit)
            except (StorageError, ValidationError, InconclusiveCheck, SandboxError) as exc:
                self.log(f"{self.name}: cannot re-run job {job.job_id} unit {unit} (no verdict filed): {exc}")
                return filed
            try:
                self._file(job, check)
            except ChainError as exc:
                self.log(f"{self.name}: filing job {job.job_id} unit {unit} failed: {exc.reason or exc}")
                continue
            filed.append(check)
            self.checks.append(check)
            verdict = "matches" if check.ok else "DOES NOT MATCH"
            self.log(f"{self.name}: job {job.job_id} unit {unit} {verdict} ({check.detail}, {check.seconds:.1f}s)")
            if not check.ok:
                break  # one wrong unit settles the job; the rest is moot
        return filed

    def check_unit(self, job: Job, unit: int) -> Check:
        """Re-run unit `unit` (the job's own index) and compare it with what the provider committed."""
        started = time.perf_counter()
        committed = self.client.unit_result(job.job_id, unit).result_hash
        # A spec this verifier cannot fetch raises: a verifier on the wrong store must not slash anyone.
        spec = fetch_job(self.store, job.spec_digest)
        dataset = self.datasets.get(spec.private_data) if isinstance(spec, CommandJob) and spec.private_data else None
        outcome = run_unit(
            self.sandbox,
            spec,
            job.spec_digest,
            job.first_unit + unit,
            private_data={dataset.digest: dataset.path} if dataset else None,
            output_filter=dataset.output_filter(spec) if dataset and isinstance(spec, CommandJob) else None,
            publish=False,
            needs=job.needs,  # the limits the provider ran it under
        )
        if outcome.sandbox.timed_out or outcome.sandbox.cancelled:
            raise InconclusiveCheck(f"the re-run of job {job.job_id} unit {unit} did not finish in its limits")
        if spec.compare == "bitwise":
            ok = outcome.result_hash == committed
            detail = "same result hash" if ok else f"result {outcome.result_digest[:12]}… vs {committed.hex()[:12]}…"
        else:
            ok, detail = self._within_tolerance(spec, job.spec_digest, outcome, committed)
        elapsed = time.perf_counter() - started
        return Check(job.job_id, unit, ok, outcome.result_hash, detail, elapsed, by_hash=spec.compare == "bitwise")

    def _file(self, job: Job, check: Check) -> None:
        if check.by_hash:
            self.client.verify_unit_hash(self.account, job.job_id, check.unit, check.recomputed_hash)
        else:
            self.client.verify_unit(self.account, job.job_id, check.unit, check.ok)

    def _within_tolerance(
        self, spec: TrainingJob | CommandJob, spec_digest: str, outcome: UnitOutcome, committed: bytes
    ) -> tuple[bool, str]:
        """Compare outputs number by number; structure (exit code, names) must match exactly."""
        opener = None
        if spec.sealed_to is not None:
            opener = self.sealing_keys.get(spec.sealed_to)
            if opener is None:
                raise InconclusiveCheck("its outputs are sealed to the buyer, and this verifier lacks the buyer's key")
        try:
            theirs = fetch_result(self.store, committed)
        except (StorageError, ValidationError) as exc:
            return False, f"committed result unavailable: {exc}"
        mine = outcome.manifest
        for key in ("exit_code", "error", "missing", "rejected", "withheld"):
            if theirs.get(key) != mine.get(key):
                return False, f"{key} differs: {theirs.get(key)!r} vs {mine.get(key)!r}"
        if set(theirs["outputs"]) != set(mine["outputs"]):
            return False, f"outputs differ: {sorted(theirs['outputs'])} vs {sorted(mine['outputs'])}"
        worst = 0.0
        for name, digest in theirs["outputs"].items():
            try:
                their_bytes = self.store.get(digest, max_bytes=(spec.limits.max_output_mb << 20) + 4096)
                if opener is not None:
                    their_bytes = unseal(their_bytes, opener, unit_context(spec_digest, mine["unit"], name))
            except StorageError as exc:
                return False, f"output {name} unavailable: {exc}"
            except SealError as exc:
                return False, f"output {name} is not sealed to the buyer for this unit: {exc}"
            distance = _distance(name, their_bytes, outcome.sandbox.outputs[name])
            worst = max(worst, distance)
            if distance > spec.tolerance:
                return False, f"output {name} differs by {distance:.3g} > tolerance {spec.tolerance:g}"
        return True, f"within tolerance (max difference {worst:.3g})"

    def _needs_missing_data(self, job: Job) -> bool:
        """Whether the job is compute-to-data on a data set this verifier cannot stage."""
        try:
            spec = fetch_job(self.store, job.spec_digest)
        except CoveyError:
            return False  # `check_unit` reports an unfetchable spec as a failed check
        return isinstance(spec, CommandJob) and spec.private_data is not None and spec.private_data not in self.datasets

    def _may_verify(self, job: Job) -> bool:
        if self.only_buyer_jobs:
            return job.buyer == self.address
        return job.buyer == self.address or self.client.is_verifier(self.address)


def _distance(name: str, first: bytes, second: bytes) -> float:
    """How far apart two versions of an output are: weights by tensor, text by its numbers, else 0 or inf."""
    if first == second:
        return 0.0
    if name.endswith(_SAFETENSORS_SUFFIX):
        try:
            return weights_distance(first, second)
        except Exception:  # the native parser raises several types for junk; junk is simply "far"
            return float("inf")
    a, b = _NUMBER.findall(first), _NUMBER.findall(second)
    if len(a) != len(b) or not a or _NUMBER.sub(b"#", first) != _NUMBER.sub(b"#", second):
        return float("inf")
    return max(abs(float(x) - float(y)) for x, y in zip(a, b, strict=True))


def render_check(check: Check) -> dict[str, object]:
    """A check as plain data (for `--json` and the demo)."""
    return {
        "job": check.job_id,
        "unit": check.unit,
        "ok": check.ok,
        "detail": check.detail,
        "recomputed": check.recomputed_hash.hex(),
        "seconds": round(check.seconds, 2),
    }
