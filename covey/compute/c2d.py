"""Compute-to-data: a provider runs buyers' jobs next to a private data set; only checked, declared outputs leave.

The owner keeps the file; the network only ever sees its sha256 (the `private_data` a `CommandJob` names).
The sandbox stages the file next to the buyer's program, and the result is filtered before anything is
uploaded: an output must be declared, under the size cap, and must not contain any row of the data set,
neither as raw float32/float64 bytes nor as numbers written out as text. Withheld outputs are listed
in the result manifest, so the verifier's re-run reaches the same result hash.
Limits, honestly: a program can still encode rows in ways no scan recognises (compressed, encrypted, or
spread over many jobs). The size cap bounds how much can leave per unit; owners who need more than this
should accept only programs they have reviewed (pin the `program.py` digests they run).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covey.compute.jobs import CommandJob, OutputFilter, UnitLimits
from covey.errors import ValidationError
from covey.storage import ArtifactStore, sha256_hex

PRIVATE_DATA_NAME = "private.npz"
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Numbers written as text lose digits: "51.64" stands for 51.6405. Match rows within this precision.
_TEXT_RTOL = 2e-3
_TEXT_ATOL = 1e-3
_MIN_OUTPUT_CAP_BYTES = 64 << 10


@dataclass(frozen=True)
class PrivateDataset:
    """A data set that never leaves its owner's machine: the file, its digest and its rows (for the leak scan)."""

    path: Path
    digest: str
    inputs: np.ndarray
    targets: np.ndarray | None

    @classmethod
    def load(cls, path: Path) -> PrivateDataset:
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
        return cls(path, sha256_hex(path.read_bytes()), inputs, targets)

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])

    def describe(self) -> dict[str, object]:
        """What the owner may publish about the data: its digest and shape, never a value."""
        return {
            "digest": self.digest,
            "rows": self.rows,
            "features": int(self.inputs.shape[1]),
            "labelled": self.targets is not None,
        }

    def output_cap_bytes(self) -> int:
        """The most one output may hold: a quarter of the raw data, so no unit can carry it all out."""
        return max(_MIN_OUTPUT_CAP_BYTES, self.inputs.nbytes // 4)

    def find_leak(self, data: bytes) -> str | None:
        """Why `data` would leak rows (None if it looks clean)."""
        for dtype in (np.float32, np.float64):
            for row in self.inputs.astype(dtype):
                if row.tobytes() in data:
                    return f"contains a raw row ({np.dtype(dtype).name} bytes)"
        numbers = np.asarray([float(match) for match in _NUMBER.findall(data)], dtype=np.float64)
        numbers = numbers[np.isfinite(numbers)]  # "1e999" parses as inf and matches nothing
        if self._text_leak(numbers):
            return "contains a raw row written as text"
        return None

    def _text_leak(self, numbers: np.ndarray) -> bool:
        """Whether some run of `features` consecutive numbers equals a row, to the precision text keeps."""
        width = self.inputs.shape[1]
        if len(numbers) < width:
            return False
        rows = self.inputs.astype(np.float64)
        order = np.argsort(rows[:, 0])
        first_column = rows[order, 0]
        for start in range(len(numbers) - width + 1):
            value = numbers[start]
            slack = _TEXT_RTOL * abs(value) + _TEXT_ATOL
            low, high = np.searchsorted(first_column, [value - slack, value + slack + 1e-12])
            window = numbers[start : start + width]
            for index in order[low:high]:
                if np.allclose(rows[index], window, rtol=_TEXT_RTOL, atol=_TEXT_ATOL):
                    return True
        return False

    def output_filter(self) -> OutputFilter:
        """The filter a provider applies before anything it computed on this data leaves."""
        cap = self.output_cap_bytes()

        def keep_safe(outputs: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, str]]:
            kept: dict[str, bytes] = {}
            withheld: dict[str, str] = {}
            for name, data in outputs.items():
                if len(data) > cap:
                    withheld[name] = f"{len(data)} bytes, over the {cap}-byte compute-to-data cap"
                elif (reason := self.find_leak(data)) is not None:
                    withheld[name] = reason
                else:
                    kept[name] = data
            return kept, withheld

        return keep_safe


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
