"""Job specs in the artifact store and how one unit of a job runs, deterministically, in the sandbox.

Two kinds of job, each a canonical JSON artifact whose sha256 is the on-chain `specHash`:
- `TrainingJob`: a task (a `TaskSpec`, or an Arena task manifest that names its public training data)
  plus one seed and hyper-parameters per unit. A unit trains the task's model at one torch thread with
  deterministic algorithms and writes canonical safetensors, so the same unit gives the same bytes on
  any run on the same platform and the verifier can compare hashes.
- `CommandJob`: argv (with `{unit}` replaced by the unit index), declared input digests and declared
  output names; optionally a compute-to-data `private_data` digest that only its owner can stage (and only
  for algorithms it approved), or `network` access (a provider sells it at a premium; never with data).
Either kind may name the buyer's public key in `sealed_to`: outputs are then sealed to the buyer
(`covey.compute.sealing`) before they are uploaded, so only the buyer can read, or commit, what it rented.
A unit's result is a small JSON manifest (job, unit, exit code, output digests); its sha256 is the
`resultHash` a provider commits, and the buyer fetches every output through it.
Run as `python -m covey.compute.jobs train-unit ...`, this module is the training program itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from covey.compute.sandbox import FILE_NAME_PATTERN, Limits, Sandbox, SandboxResult
from covey.errors import ValidationError

if TYPE_CHECKING:  # the training program below runs in every unit's process: keep its imports light
    from covey.compute.client import Resources
    from covey.storage import ArtifactRef, ArtifactStore

MAX_JOB_SPEC_BYTES = 1 << 20
MAX_TASK_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20
MAX_UNITS = 256  # the Market's MAX_UNITS
TRAIN_PROGRAM = ["python", "-m", "covey.compute.jobs", "train-unit"]
WEIGHTS_OUTPUT = "weights.safetensors"
_DIGEST = r"^[0-9a-f]{64}$"

Digest = Annotated[str, Field(pattern=_DIGEST)]
PublicKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # an X25519 public key, as `sealing` writes it
FileName = Annotated[str, Field(pattern=FILE_NAME_PATTERN)]  # what the sandbox accepts, checked before any bid
Compare = Literal["bitwise", "tolerance"]
# Decides which outputs may leave (compute-to-data): returns (kept, withheld name -> reason).
OutputFilter = Callable[[dict[str, bytes]], tuple[dict[str, bytes], dict[str, str]]]


def _usable_recipient(value: str | None) -> str | None:
    """A `sealed_to` outputs can really be sealed to (a provider must not win a job it cannot deliver)."""
    if value is None:
        return None
    from covey.compute.sealing import check_recipient

    try:
        return check_recipient(value)
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc


class UnitLimits(BaseModel):
    """What one unit may use; the provider's sandbox applies these (a buyer states them, a provider may cap them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_seconds: int = Field(default=600, ge=1)
    memory_mb: int = Field(default=4096, ge=64)
    wall_clock_s: float = Field(default=900, gt=0)
    max_output_mb: int = Field(default=256, ge=1)

    def to_limits(self) -> Limits:
        return Limits(
            cpu_seconds=self.cpu_seconds,
            memory_bytes=self.memory_mb << 20,
            wall_clock_s=self.wall_clock_s,
            max_output_bytes=self.max_output_mb << 20,
            file_size_bytes=max(self.max_output_mb, 64) << 20,
        )


class TrainUnit(BaseModel):
    """One unit of a training job: its seed and hyper-parameters (None keeps the task's hint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(ge=0, lt=2**63)
    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    weight_decay: float | None = Field(default=None, ge=0)


class TrainingJob(BaseModel):
    """Train a task's model once per unit; `compare` says how the verifier checks a re-run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["train"] = "train"
    version: Literal[1] = 1
    task: Digest
    units: list[TrainUnit] = Field(min_length=1, max_length=MAX_UNITS)
    architecture: dict[str, Any] = Field(default_factory=dict)
    compare: Compare = "bitwise"
    tolerance: float = Field(default=0.0, ge=0)
    limits: UnitLimits = Field(default_factory=UnitLimits)
    sealed_to: PublicKey | None = None  # outputs sealed to this buyer key (see `covey.compute.sealing`)

    sealed_to_is_usable = field_validator("sealed_to")(_usable_recipient)

    @property
    def unit_count(self) -> int:
        return len(self.units)


class CommandJob(BaseModel):
    """Run `argv` once per unit with declared inputs; only the declared outputs come back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["command"] = "command"
    version: Literal[1] = 1
    argv: list[str] = Field(min_length=1)
    inputs: dict[FileName, Digest] = Field(default_factory=dict)
    outputs: list[FileName] = Field(min_length=1)
    units: int = Field(default=1, ge=1, le=MAX_UNITS)
    private_data: Digest | None = None  # compute-to-data: the sha256 of a data set only its owner holds
    private_data_name: FileName = "private.npz"
    compare: Compare = "bitwise"
    tolerance: float = Field(default=0.0, ge=0)
    limits: UnitLimits = Field(default_factory=UnitLimits)
    network: bool = False  # the unit may use the provider's network (providers charge a premium for it)
    sealed_to: PublicKey | None = None

    sealed_to_is_usable = field_validator("sealed_to")(_usable_recipient)

    @model_validator(mode="after")
    def _no_network_next_to_data(self) -> CommandJob:
        if self.private_data is not None and self.network:
            raise ValueError("a compute-to-data job never gets network access: it could send the data anywhere")
        return self

    @property
    def unit_count(self) -> int:
        return self.units


_LATER_FIELDS: dict[str, object] = {"sealed_to": None, "network": False}
JobSpec = Annotated[TrainingJob | CommandJob, Field(discriminator="kind")]
_JOB_ADAPTER: pydantic.TypeAdapter[TrainingJob | CommandJob] = pydantic.TypeAdapter(JobSpec)


def job_to_bytes(job: TrainingJob | CommandJob) -> bytes:
    """Canonical JSON: the same job always has the same sha256.

    Fields added later are left out while unset, so a job that does not use them keeps the digest it had.
    """
    data = job.model_dump(mode="json")
    for name, unset in _LATER_FIELDS.items():
        if data.get(name, unset) == unset:
            data.pop(name, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def parse_job(data: bytes) -> TrainingJob | CommandJob:
    """A job spec from its JSON; `ValidationError` says what is wrong."""
    try:
        return _JOB_ADAPTER.validate_json(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"not a valid compute job spec: {exc}") from exc


def publish_job(store: ArtifactStore, job: TrainingJob | CommandJob) -> ArtifactRef:
    """Put the job spec in the store; its digest is the `specHash` to post."""
    return store.put(job_to_bytes(job))


def fetch_job(store: ArtifactStore, digest: str) -> TrainingJob | CommandJob:
    """The job spec with this digest, hash-checked by the store."""
    return parse_job(store.get(digest, max_bytes=MAX_JOB_SPEC_BYTES))


# -- units ------------------------------------------------------------------------------------------


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
        task = _read_task(store.get(job.task, max_bytes=MAX_TASK_BYTES))
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


# -- training units ---------------------------------------------------------------------------------


def _read_task(data: bytes) -> dict[str, Any]:
    """A task artifact as JSON: a bare `TaskSpec`, or an Arena manifest (`spec` + `train_data`)."""
    try:
        task = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the job's task is not JSON: {exc}") from exc
    if not isinstance(task, dict):
        raise ValidationError("the job's task is not a JSON object")
    return task


def resolve_task(task_bytes: bytes, train_data: bytes | None) -> tuple[Any, Any]:
    """The `TaskSpec` and public training `Dataset` a training unit uses."""
    from covey.ml import TaskSpec

    task = _read_task(task_bytes)
    if "spec" in task and "train_data" in task:
        if train_data is None:
            raise ValidationError("an Arena task manifest needs its training data as an input")
        spec = TaskSpec.model_validate(task["spec"])
        return spec, decode_dataset(train_data)
    spec = TaskSpec.from_bytes(task_bytes)
    return spec, spec.load_split().public_train


def decode_dataset(blob: bytes) -> Any:
    """A `Dataset` from the safetensors arrays an Arena manifest's `train_data` holds."""
    from safetensors.numpy import load as load_arrays

    from covey.ml import Dataset

    try:
        header_length = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8 : 8 + header_length]).get("__metadata__") or {}
        arrays = load_arrays(blob)
        return Dataset(
            name=str(metadata["dataset"]),
            task=metadata["task"],
            inputs=arrays["inputs"],
            targets=arrays.get("targets"),
            num_classes=int(metadata["num_classes"]),
        )
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"the task's training data is not a dataset file: {exc}") from exc


def train_unit_weights(
    task_bytes: bytes, unit: TrainUnit, architecture: Mapping[str, Any], train_data: bytes | None = None
) -> bytes:
    """Train one unit and return canonical safetensors; the same arguments give the same bytes."""
    import torch

    from covey.ml import TrainConfig, build_model, train

    spec, data = resolve_task(task_bytes, train_data)
    hints = spec.train
    config = TrainConfig(
        epochs=unit.epochs or hints.epochs,
        lr=unit.lr or hints.lr,
        batch_size=unit.batch_size or hints.batch_size,
        max_steps=unit.max_steps if unit.max_steps is not None else hints.max_steps,
        weight_decay=unit.weight_decay if unit.weight_decay is not None else hints.weight_decay,
        seed=unit.seed,
        num_threads=1,
        deterministic=True,
    )
    torch.set_num_threads(1)
    # The initial weights come from the global generator: seed it too, or two runs start apart.
    torch.manual_seed(unit.seed)
    model = build_model(spec.family, {**spec.architecture, **architecture})
    train(model, data, config, progress=False)
    return canonical_weights(model)


_SAFETENSORS_DTYPES = {
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


def canonical_weights(model: Any) -> bytes:
    """A model's `state_dict` as safetensors with sorted keys and no hash-ordered maps.

    The safetensors library writes its metadata map in hash order, which differs between processes, so
    the same weights would hash differently; this writer is byte-for-byte reproducible and
    `covey.ml.load_weights` reads it like any safetensors file.
    """
    import torch

    from covey.ml.models import MODEL_FAMILIES, config_dict
    from covey.ml.weights import CONFIG_KEY, FAMILY_KEY

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    header: dict[str, Any] = {}
    if getattr(model, "family", None) in MODEL_FAMILIES:
        header["__metadata__"] = {
            FAMILY_KEY: str(model.family),
            CONFIG_KEY: json.dumps(config_dict(model), sort_keys=True),
        }
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[str(tensor.dtype)],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def weights_distance(first: bytes, second: bytes) -> float:
    """The largest absolute difference between two weights files' tensors (inf if their layouts differ)."""
    from safetensors.torch import load

    a, b = load(first), load(second)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    worst = 0.0
    for name in a:
        diff = (a[name].double() - b[name].double()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst


def _train_unit_main(args: list[str]) -> int:
    """`train-unit TASK UNIT OUT [TRAIN_DATA]`: the program a training unit runs inside the sandbox."""
    if len(args) not in (3, 4):
        print("usage: python -m covey.compute.jobs train-unit TASK UNIT OUT [TRAIN_DATA]", file=sys.stderr)
        return 2
    task_path, unit_path, out_path = (Path(arg) for arg in args[:3])
    params = json.loads(unit_path.read_text())
    train_data = Path(args[3]).read_bytes() if len(args) == 4 else None
    weights = train_unit_weights(
        task_path.read_bytes(), TrainUnit.model_validate(params["unit"]), params.get("architecture") or {}, train_data
    )
    out_path.write_bytes(weights)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "train-unit":
        sys.exit(_train_unit_main(sys.argv[2:]))
    print("usage: python -m covey.compute.jobs train-unit TASK UNIT OUT [TRAIN_DATA]", file=sys.stderr)
    sys.exit(2)
