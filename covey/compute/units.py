"""How one unit of a job runs in the sandbox, and the result manifest whose sha256 a provider commits.

A unit's result is a small JSON manifest (job, unit, exit code, output digests); its sha256 is the
`resultHash` a provider commits, and the buyer fetches every output through it. A training unit runs the
deterministic program in `covey.compute.training`, so a verifier's re-run gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covey.compute.sandbox import Limits, Sandbox, SandboxResult
from covey.compute.specs import CommandJob, TrainingJob, read_task
from covey.errors import ValidationError

if TYPE_CHECKING:
    from covey.compute.resources import Resources
    from covey.storage import ArtifactRef, ArtifactStore

MAX_TASK_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20
TRAIN_PROGRAM = ["python", "-m", "covey.compute.training", "train-unit"]
WEIGHTS_OUTPUT = "weights.safetensors"
# Decides which outputs may leave (compute-to-data): returns (kept, withheld name -> reason).
OutputFilter = Callable[[dict[str, bytes]], tuple[dict[str, bytes], dict[str, str]]]


@dataclass(frozen=True)
class UnitPlan:
    """Everything the sandbox needs to run one unit."""

    argv: list[str]
    inputs: dict[str, str]
    files: dict[str, bytes]
    local_files: dict[str, Path]
    outputs: list[str]
    limits: Limits
    network: bool = False


@dataclass(frozen=True)
class UnitOutcome:
    """One unit's run: the manifest whose sha256 is the result hash, the output refs and the raw sandbox result."""

    unit: int
    manifest: dict[str, Any]
    manifest_bytes: bytes
    outputs: dict[str, ArtifactRef]
    sandbox: SandboxResult

    @property
    def result_digest(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def result_hash(self) -> bytes:
        """The 32 bytes to commit on chain."""
        return bytes.fromhex(self.result_digest)


def plan_unit(
    store: ArtifactStore,
    job: TrainingJob | CommandJob,
    unit: int,
    *,
    private_data: Mapping[str, Path] | None = None,
    needs: Resources | None = None,
) -> UnitPlan:
    """How to run unit `unit` (the job spec's own index) of `job`.

    `private_data` maps data-set digests to local files this provider holds; a compute-to-data job
    whose data set is not there raises `ValidationError` (the provider should not have bid).
    `needs` are the cores, memory and GPUs the job declared on chain: the sandbox holds the unit to them
    (provider and verifier alike, so an honest unit that ran out of memory re-runs to the same result).
    """
    if not 0 <= unit < job.unit_count:
        raise ValidationError(f"unit {unit} is outside the job's {job.unit_count} units")
    limits = job.limits.to_limits()
    if needs is not None:
        limits = limits.for_needs(needs.cpu_cores, needs.memory_mb, needs.gpus)
    if isinstance(job, TrainingJob):
        task = read_task(store.get(job.task, max_bytes=MAX_TASK_BYTES))
        inputs = {"task.json": job.task}
        argv = [*TRAIN_PROGRAM, "task.json", "unit.json", WEIGHTS_OUTPUT]
        if task.get("train_data"):
            inputs["train_data.bin"] = str(task["train_data"])
            argv.append("train_data.bin")
        params = {"unit": job.units[unit].model_dump(mode="json"), "architecture": job.architecture}
        files = {"unit.json": json.dumps(params, sort_keys=True).encode()}
        return UnitPlan(argv, inputs, files, {}, [WEIGHTS_OUTPUT], limits)
    local: dict[str, Path] = {}
    if job.private_data is not None:
        held = (private_data or {}).get(job.private_data)
        if held is None:
            raise ValidationError(f"this provider does not hold the private data set {job.private_data[:12]}…")
        local[job.private_data_name] = held
    argv = [part.replace("{unit}", str(unit)) for part in job.argv]
    return UnitPlan(argv, dict(job.inputs), {}, local, list(job.outputs), limits, network=job.network)


def run_unit(
    sandbox: Sandbox,
    job: TrainingJob | CommandJob,
    job_digest: str,
    unit: int,
    *,
    private_data: Mapping[str, Path] | None = None,
    output_filter: OutputFilter | None = None,
    publish: bool = True,
    cancel: threading.Event | None = None,
    needs: Resources | None = None,
) -> UnitOutcome:
    """Run one unit in the sandbox and build its result manifest.

    With `publish` the outputs and the manifest go to the store (a provider); without, they are only
    hashed (a verifier re-running a unit to compare). `output_filter` may withhold outputs
    (compute-to-data); withheld names are listed in the manifest, so a re-run reaches the same hash.
    A compute-to-data unit runs only in namespace isolation (`SandboxError` otherwise), and its manifest
    carries no number the program chose (exit code, output sizes): those could spell out data too.
    A job with `sealed_to` has its outputs sealed to the buyer before anything is hashed or uploaded.
    """
    from covey.compute.sealing import SEAL_SCHEME, seal, unit_context
    from covey.storage import ArtifactRef, sha256_hex

    plan = plan_unit(sandbox.store, job, unit, private_data=private_data, needs=needs)
    compute_to_data = bool(plan.local_files)
    result = sandbox.run(
        plan.argv,
        inputs=plan.inputs,
        files=plan.files,
        local_files=plan.local_files,
        outputs=plan.outputs,
        limits=plan.limits,
        cancel=cancel,
        network=plan.network,
        require_isolation=compute_to_data,
    )
    kept, withheld = output_filter(result.outputs) if output_filter else (result.outputs, {})
    if job.sealed_to is not None:
        kept = {name: seal(data, job.sealed_to, unit_context(job_digest, unit, name)) for name, data in kept.items()}
    refs = {
        name: sandbox.store.put(data) if publish else ArtifactRef(sha256_hex(data), "", len(data))
        for name, data in sorted(kept.items())
    }
    exit_code, error, rejected = result.returncode, result.error, dict(result.rejected)
    if compute_to_data:
        exit_code = 0 if result.returncode == 0 else 1
        error = "" if result.returncode == 0 else _coarse_error(result)
        rejected = dict.fromkeys(result.rejected, "not a regular file within the size cap")
    manifest: dict[str, Any] = {
        "version": 1,
        "job": job_digest,
        "unit": unit,
        "exit_code": exit_code,
        "timed_out": result.timed_out,
        "error": error,
        "outputs": {name: ref.digest for name, ref in refs.items()},
        "missing": sorted(result.missing),
        "rejected": dict(sorted(rejected.items())),
        "withheld": dict(sorted(withheld.items())),
    }
    if job.sealed_to is not None:
        manifest["sealed"] = SEAL_SCHEME
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    if publish:
        sandbox.store.put(manifest_bytes)
    return UnitOutcome(unit, manifest, manifest_bytes, refs, result)


def _coarse_error(result: SandboxResult) -> str:
    """A compute-to-data failure in words that carry no number the program chose."""
    if result.error.startswith(("timed out", "out of memory", "killed: the unit used up", "cancelled")):
        return result.error  # worded from the buyer's own limits
    return "the program failed"


def fetch_result(store: ArtifactStore, result_hash: bytes) -> dict[str, Any]:
    """The result manifest a provider committed (by its on-chain hash), hash-checked by the store."""
    data = store.get(result_hash.hex(), max_bytes=MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"result {result_hash.hex()[:12]}… is not a result manifest: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict):
        raise ValidationError(f"result {result_hash.hex()[:12]}… is not a result manifest")
    return manifest
