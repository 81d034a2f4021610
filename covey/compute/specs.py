"""Compute job specs: what a buyer publishes in the artifact store, whose sha256 is the job's on-chain `specHash`.

Two kinds of job, each a canonical JSON artifact:
- `TrainingJob`: a task (a `TaskSpec`, or an Arena task manifest that names its public training data)
  plus one seed and hyper-parameters per unit (`covey.compute.training` trains them, deterministically).
- `CommandJob`: argv (with `{unit}` replaced by the unit index), declared input digests and declared
  output names; optionally a compute-to-data `private_data` digest that only its owner can stage (and only
  for algorithms it approved), or `network` access (a provider sells it at a premium; never with data).
Either kind may name the buyer's public key in `sealed_to`: outputs are then sealed to the buyer
(`covey.compute.sealing`) before they are uploaded, so only the buyer can read, or commit, what it rented.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from covey.compute.sandbox import FILE_NAME_PATTERN, Limits
from covey.errors import ValidationError

if TYPE_CHECKING:  # specs are read in every unit's process: keep its imports light
    from covey.storage import ArtifactRef, ArtifactStore

MAX_JOB_SPEC_BYTES = 1 << 20
MAX_UNITS = 256  # the Market's MAX_UNITS
_DIGEST = r"^[0-9a-f]{64}$"

Digest = Annotated[str, Field(pattern=_DIGEST)]
PublicKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # an X25519 public key, as `sealing` writes it
FileName = Annotated[str, Field(pattern=FILE_NAME_PATTERN)]  # what the sandbox accepts, checked before any bid
Compare = Literal["bitwise", "tolerance"]


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


def read_task(data: bytes) -> dict[str, Any]:
    """A task artifact as JSON: a bare `TaskSpec`, or an Arena manifest (`spec` + `train_data`)."""
    try:
        task = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the job's task is not JSON: {exc}") from exc
    if not isinstance(task, dict):
        raise ValidationError("the job's task is not a JSON object")
    return task
