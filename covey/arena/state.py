"""A node's memory of its tasks: salts, pending commitments and local weights under `COVEY_HOME/arena/nodes/`.

A commitment is worthless without its salt, so the record is written (atomically, fsynced) *before* the
commit transaction is sent: a node killed at any point can still reveal after a restart.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class TaskRecord:
    """What one node remembers about one task. Hex strings keep the JSON readable."""

    task_id: int
    salt: str = ""
    weights_hash: str = ""  # trainer: sha256 of the weights it committed to
    scores: list[int] = field(default_factory=list)  # validator: the scores it committed to
    notes: dict[str, Any] = field(default_factory=dict)  # validator: why each submission got its score
    committed: bool = False
    revealed: bool = False
    finalized: bool = False
    gave_up: str = ""  # why the node stopped working on this task, if it did

    @property
    def salt_bytes(self) -> bytes:
        return bytes.fromhex(self.salt)

    @property
    def weights_hash_bytes(self) -> bytes:
        return bytes.fromhex(self.weights_hash)


class NodeState:
    """One node's folder: `COVEY_HOME/arena/nodes/<role>-<address>/task-<id>.json` (+ `.safetensors`)."""

    def __init__(self, home: Path, role: str, address: str) -> None:
        self.folder = home / "arena" / "nodes" / f"{role}-{address.lower()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    def _path(self, task_id: int, suffix: str) -> Path:
        return self.folder / f"task-{task_id}{suffix}"

    def load(self, task_id: int) -> TaskRecord:
        """The record for a task (a fresh one when the node has never touched it)."""
        path = self._path(task_id, ".json")
        if not path.exists():
            return TaskRecord(task_id=task_id)
        return TaskRecord(**json.loads(path.read_text()))

    def save(self, record: TaskRecord) -> None:
        _atomic_write(self._path(record.task_id, ".json"), json.dumps(asdict(record), indent=2).encode())

    def save_weights(self, task_id: int, weights: bytes) -> None:
        """Keep committed weights locally until the reveal uploads them."""
        _atomic_write(self._path(task_id, ".safetensors"), weights)

    def load_weights(self, task_id: int) -> bytes | None:
        path = self._path(task_id, ".safetensors")
        return path.read_bytes() if path.exists() else None
