"""The deterministic training program a training unit runs in the sandbox, and the tools that check its output.

A unit trains the task's model at one torch thread with deterministic algorithms and writes canonical
safetensors (`canonical_weights`), so the same unit gives the same bytes on any run on the same platform and
the verifier can compare hashes (or, for a `tolerance` job, `weights_distance`).
Run as `python -m covey.compute.training train-unit TASK UNIT OUT [TRAIN_DATA]`, this module is the program.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from covey.compute.specs import TrainUnit, read_task
from covey.errors import ValidationError

USAGE = "usage: python -m covey.compute.training train-unit TASK UNIT OUT [TRAIN_DATA]"


def resolve_task(task_bytes: bytes, train_data: bytes | None) -> tuple[Any, Any]:
    """The `TaskSpec` and public training `Dataset` a training unit uses."""
    from covey.ml import TaskSpec

    task = read_task(task_bytes)
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


def main(argv: list[str]) -> int:
    """`train-unit TASK UNIT OUT [TRAIN_DATA]`: the program a training unit runs inside the sandbox."""
    if len(argv) not in (4, 5) or argv[0] != "train-unit":
        print(USAGE, file=sys.stderr)
        return 2
    task_path, unit_path, out_path = (Path(arg) for arg in argv[1:4])
    params = json.loads(unit_path.read_text())
    train_data = Path(argv[4]).read_bytes() if len(argv) == 5 else None
    weights = train_unit_weights(
        task_path.read_bytes(), TrainUnit.model_validate(params["unit"]), params.get("architecture") or {}, train_data
    )
    out_path.write_bytes(weights)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
