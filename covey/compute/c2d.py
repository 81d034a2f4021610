"""Compute-to-data, as Ocean does it: approved algorithms run next to private data; only small declared outputs leave.

The owner keeps the file; the network only ever sees its sha256 (the `private_data` a `CommandJob` names).
What keeps the rows in, in order of strength:
1. Approval by code hash. The owner lists, in its data offer (`PrivateDataset.approvals`), the algorithms that
   may run on the data: `algorithm_digest(job)` covers the argv, every input (the program's own sha256) and the
   declared outputs. Any other job is refused before it runs; the provider does not even bid.
2. Isolation. The unit runs only in the namespace sandbox (no network at all, no view of the provider); a
   provider without namespaces refuses compute-to-data. A job cannot declare network access next to data.
3. Declared, size-capped outputs. Only the declared outputs leave, each at most the approval's cap, which by
   default fits aggregates (per-feature statistics: 1 KiB + 64 bytes per feature) and not the rows: an encoded
   copy of the table (XOR-ed, shifted, compressed) is withheld for its size. The manifest carries no number
   the program chose (exit code, output sizes).
4. The leak scan, a second line: an output holding a row as raw float32/float64 bytes or as text, shifted by a
   constant (consecutive differences), or XOR-ed with a repeating key of up to 8 bytes (consecutive XORs) is
   withheld. Withheld outputs are listed in the result manifest, so the verifier's re-run reaches the same hash.
Limits, honestly: an approved program can still leak what its outputs may hold (a cap's worth of bytes per
unit, in an encoding no scan knows): approve only programs you have read, with caps no larger than their real
outputs need.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from covey.compute.errors import NotApproved
from covey.compute.specs import CommandJob, UnitLimits
from covey.compute.units import OutputFilter
from covey.errors import ValidationError
from covey.storage import ArtifactStore, sha256_hex

PRIVATE_DATA_NAME = "private.npz"
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Numbers written as text lose digits: "51.64" stands for 51.6405. Match rows within this precision.
_TEXT_RTOL = 2e-3
_TEXT_ATOL = 1e-3
# Raw floats reread from bytes: a row shifted in float32 keeps about 1e-7 of the shifted magnitude.
_BINARY_RTOL = 1e-3
_AGGREGATE_BASE_BYTES = 1 << 10
_AGGREGATE_BYTES_PER_FEATURE = 64
_MIN_SHIFT_FEATURES = 4  # below this, consecutive differences match too much by chance


def algorithm_digest(job: CommandJob) -> str:
    """What a data owner approves: the sha256 of the job's argv, inputs (by digest) and declared outputs.

    Units, limits and the buyer's key are left out (the buyer picks them); the data set's name inside the
    unit is in, since the argv refers to it.
    """
    algorithm = {
        "argv": job.argv,
        "inputs": dict(sorted(job.inputs.items())),
        "outputs": job.outputs,
        "private_data_name": job.private_data_name,
    }
    return hashlib.sha256(json.dumps(algorithm, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Approval:
    """One algorithm the owner lets run on its data, and the most bytes each of its outputs may carry out."""

    algorithm: str
    max_output_bytes: int

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.algorithm):
            raise ValidationError(f"an approval names an algorithm by its 64-hex-digit digest, got {self.algorithm!r}")
        if self.max_output_bytes < 1:
            raise ValidationError(f"an approval's output cap must be positive, got {self.max_output_bytes}")


@dataclass(frozen=True)
class PrivateDataset:
    """A data offer: a data set that never leaves its owner's machine, and the algorithms approved to run on it."""

    path: Path
    digest: str
    inputs: np.ndarray
    targets: np.ndarray | None
    approvals: tuple[Approval, ...] = ()

    @classmethod
    def load(cls, path: Path, approvals: Iterable[Approval] = ()) -> PrivateDataset:
        """Open an `.npz` with `inputs` (rows x features) and optional `targets`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                inputs = np.asarray(archive["inputs"])
                targets = np.asarray(archive["targets"]) if "targets" in archive.files else None
        except (OSError, KeyError, ValueError) as exc:
            raise ValidationError(f"{path} is not a private data set (.npz with an 'inputs' array): {exc}") from exc
        if inputs.ndim != 2 or len(inputs) == 0:
            raise ValidationError(f"{path}: 'inputs' must be a non-empty rows x features array, got {inputs.shape}")
        return cls(path, sha256_hex(path.read_bytes()), inputs, targets, tuple(approvals))

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])

    def describe(self) -> dict[str, object]:
        """What the owner may publish about the data: its digest, shape and approved algorithms, never a value."""
        return {
            "digest": self.digest,
            "rows": self.rows,
            "features": int(self.inputs.shape[1]),
            "labelled": self.targets is not None,
            "approved": {approval.algorithm: approval.max_output_bytes for approval in self.approvals},
        }

    def aggregate_cap_bytes(self) -> int:
        """The default cap on one output: room for a few numbers per feature, never for the rows."""
        return _AGGREGATE_BASE_BYTES + _AGGREGATE_BYTES_PER_FEATURE * int(self.inputs.shape[1])

    def approve(self, job: CommandJob | str, max_output_bytes: int | None = None) -> PrivateDataset:
        """This offer with one more approved algorithm (a job, or its `algorithm_digest`)."""
        algorithm = algorithm_digest(job) if isinstance(job, CommandJob) else job
        approval = Approval(algorithm, max_output_bytes or self.aggregate_cap_bytes())
        kept = tuple(existing for existing in self.approvals if existing.algorithm != algorithm)
        return replace(self, approvals=(*kept, approval))

    def admit(self, job: CommandJob) -> Approval:
        """The owner's approval for `job` on this data, or `NotApproved` saying why it may not run."""
        if job.private_data != self.digest:
            raise NotApproved(f"the job runs on data set {str(job.private_data)[:12]}…, not {self.digest[:12]}…")
        if job.network:
            raise NotApproved("a compute-to-data job never gets network access")
        algorithm = algorithm_digest(job)
        for approval in self.approvals:
            if approval.algorithm == algorithm:
                return approval
        raise NotApproved(
            f"algorithm {algorithm[:12]}… is not approved by the owner of data set {self.digest[:12]}… "
            f"({len(self.approvals)} algorithm(s) approved)"
        )

    def find_leak(self, data: bytes) -> str | None:
        """Why `data` would leak rows (None if it looks clean)."""
        for dtype in (np.float32, np.float64):
            for row in self.inputs.astype(dtype):
                if row.tobytes() in data:
                    return f"contains a raw row ({np.dtype(dtype).name} bytes)"
        if self._xor_leak(data):
            return "contains rows XOR-ed with a repeating key"
        numbers = np.asarray([float(match) for match in _NUMBER.findall(data)], dtype=np.float64)
        numbers = numbers[np.isfinite(numbers)]  # "1e999" parses as inf and matches nothing
        rows = self.inputs.astype(np.float64)
        if _window_match(numbers, rows, _TEXT_RTOL, _TEXT_ATOL):
            return "contains a raw row written as text"
        scale = float(np.abs(rows).max()) if rows.size else 0.0
        if self._shift_leak(numbers, 2 * (_TEXT_RTOL * scale + _TEXT_ATOL)):
            return "contains rows shifted by a constant, written as text"
        for dtype in (np.float32, np.float64):
            size = np.dtype(dtype).itemsize
            for offset in range(size):
                usable = (len(data) - offset) // size * size
                with np.errstate(all="ignore"):  # arbitrary bytes read as floats: NaNs and infinities abound
                    values = np.frombuffer(data, dtype=dtype, count=usable // size, offset=offset).astype(np.float64)
                if self._shift_leak(values, _BINARY_RTOL * max(scale, 1.0)):
                    return f"contains rows shifted by a constant ({np.dtype(dtype).name} bytes)"
        return None

    def _shift_leak(self, values: np.ndarray, slack: float) -> bool:
        """Whether some run of values is a row plus a constant: consecutive differences are shift-free."""
        width = self.inputs.shape[1]
        if width < _MIN_SHIFT_FEATURES or len(values) < width:
            return False
        with np.errstate(all="ignore"):
            steps = np.diff(values)
        row_steps = np.diff(self.inputs.astype(np.float64), axis=1)
        # A row with (nearly) equal features is any constant run: it says nothing and would match everywhere.
        telling = row_steps[np.abs(row_steps).max(axis=1) > 2 * slack]
        return _window_match(steps, telling, 0.0, slack)

    def _xor_leak(self, data: bytes) -> bool:
        """Whether some run of words is a row XOR-ed with a key repeating every 1, 2, 4 (or 8) bytes.

        XOR-ing neighbouring words cancels such a key: (a ^ k) ^ (b ^ k) = a ^ b.
        """
        for dtype, word in ((np.float32, np.uint32), (np.float64, np.uint64)):
            size = np.dtype(word).itemsize
            rows = np.ascontiguousarray(self.inputs.astype(dtype)).view(word)
            patterns = np.bitwise_xor(rows[:, 1:], rows[:, :-1])
            patterns = patterns[(patterns != 0).all(axis=1)]  # equal neighbours would match any repeated word
            if patterns.shape[1] == 0 or len(patterns) == 0:
                continue
            wanted = {pattern.tobytes() for pattern in patterns}
            firsts = np.unique(patterns[:, 0])
            width = patterns.shape[1]
            for offset in range(size):
                count = (len(data) - offset) // size
                if count < width + 1:
                    continue
                words = np.frombuffer(data, dtype=word, count=count, offset=offset)
                steps = np.bitwise_xor(words[1:], words[:-1])
                for start in np.nonzero(np.isin(steps[: len(steps) - width + 1], firsts))[0]:
                    if steps[start : start + width].tobytes() in wanted:
                        return True
        return False

    def output_filter(self, job: CommandJob | None = None) -> OutputFilter:
        """The filter a provider applies before anything it computed on this data leaves.

        With `job`, the owner's approval for it sets the cap (`NotApproved` if there is none); without, the
        aggregate cap applies.
        """
        cap = self.admit(job).max_output_bytes if job is not None else self.aggregate_cap_bytes()

        def keep_safe(outputs: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, str]]:
            kept: dict[str, bytes] = {}
            withheld: dict[str, str] = {}
            for name, data in outputs.items():
                if len(data) > cap:
                    # The reason names the cap only: the size itself is a number the program chose.
                    withheld[name] = f"over the {cap}-byte compute-to-data cap"
                elif (reason := self.find_leak(data)) is not None:
                    withheld[name] = reason
                else:
                    kept[name] = data
            return kept, withheld

        return keep_safe


def _window_match(values: np.ndarray, rows: np.ndarray, rtol: float, atol: float) -> bool:
    """Whether some run of `rows.shape[1]` consecutive values equals a row, within `rtol`/`atol`."""
    if len(rows) == 0 or rows.shape[1] == 0 or len(values) < rows.shape[1]:
        return False
    width = rows.shape[1]
    order = np.argsort(rows[:, 0])
    first_column = rows[order, 0]
    starts = values[: len(values) - width + 1]
    with np.errstate(all="ignore"):
        slack = rtol * np.abs(starts) + atol
        low = np.searchsorted(first_column, starts - slack, side="left")
        high = np.searchsorted(first_column, starts + slack + 1e-12, side="right")
    for start in np.nonzero(high > low)[0]:  # NaNs sort last and never become candidates
        window = values[start : start + width]
        for index in order[low[start] : high[start]]:
            if np.allclose(rows[index], window, rtol=rtol, atol=atol):
                return True
    return False


def save_private_dataset(path: Path, inputs: np.ndarray, targets: np.ndarray | None = None) -> PrivateDataset:
    """Write `inputs` (and `targets`) as an `.npz` the provider keeps, and open it."""
    buffer = io.BytesIO()
    arrays = {"inputs": np.ascontiguousarray(inputs)}
    if targets is not None:
        arrays["targets"] = np.ascontiguousarray(targets)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    Path(path).write_bytes(buffer.getvalue())
    return PrivateDataset.load(Path(path))


# -- ready-made programs a buyer can send to the data ----------------------------------------------------

STATS_PROGRAM = b'''"""Aggregate statistics of a private data set: per-feature mean and std, label counts."""
import json, sys
import numpy as np
data = np.load(sys.argv[1], allow_pickle=False)
x = data["inputs"].astype(np.float64)
stats = {"rows": int(x.shape[0]), "features": [
    {"mean": round(float(c.mean()), 6), "std": round(float(c.std()), 6)} for c in x.T]}
if "targets" in data.files:
    labels, counts = np.unique(data["targets"], return_counts=True)
    stats["label_counts"] = {str(int(k)): int(v) for k, v in zip(labels, counts)}
json.dump(stats, open("stats.json", "w"), sort_keys=True)
'''

TRAIN_PROGRAM = b'''"""Train an MLP classifier on a private data set; only the weights leave."""
import json, sys
import numpy as np
import torch
from covey.compute.jobs import canonical_weights
from covey.ml import Dataset, TrainConfig, build_model, train
data = np.load(sys.argv[1], allow_pickle=False)
seed, steps = int(sys.argv[2]), int(sys.argv[3])
x = data["inputs"].astype(np.float32)
y = data["targets"].astype(np.int64)
x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
classes = int(y.max()) + 1
torch.set_num_threads(1)
torch.manual_seed(seed)
model = build_model("mlp", {"input_dim": x.shape[1], "hidden_sizes": [16], "num_classes": classes})
train(model, Dataset("private", "classification", x, y, classes),
      TrainConfig(seed=seed, num_threads=1, max_steps=steps, lr=3e-3, batch_size=32), progress=False)
open("weights.safetensors", "wb").write(canonical_weights(model))
'''


def stats_job(store: ArtifactStore, dataset_digest: str, *, limits: UnitLimits | None = None) -> CommandJob:
    """A one-unit job computing aggregate statistics next to the data set `dataset_digest`."""
    program = store.put(STATS_PROGRAM)
    return CommandJob(
        argv=["python", "program.py", PRIVATE_DATA_NAME],
        inputs={"program.py": program.digest},
        outputs=["stats.json"],
        private_data=dataset_digest,
        private_data_name=PRIVATE_DATA_NAME,
        limits=limits or UnitLimits(cpu_seconds=60, memory_mb=2048, wall_clock_s=120),
    )


def train_job(
    store: ArtifactStore, dataset_digest: str, *, seeds: int = 1, steps: int = 50, limits: UnitLimits | None = None
) -> CommandJob:
    """A job training one MLP per unit (seed = unit index) next to the data set; the weights come back."""
    program = store.put(TRAIN_PROGRAM)
    return CommandJob(
        argv=["python", "program.py", PRIVATE_DATA_NAME, "{unit}", str(steps)],
        inputs={"program.py": program.digest},
        outputs=["weights.safetensors"],
        units=seeds,
        private_data=dataset_digest,
        private_data_name=PRIVATE_DATA_NAME,
        limits=limits or UnitLimits(cpu_seconds=300, memory_mb=4096, wall_clock_s=600),
    )
