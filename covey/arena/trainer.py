"""`TrainerNode`: fetch a task's manifest and public training data, train, commit, then upload and reveal.

The weights stay on this machine until the reveal: nobody can copy what was never published, and the
commitment (with the trainer's address inside) cannot be replayed by anyone else. Given a `rental` (a
`TrainingBackend` such as the compute market's `Rental`, which the CLI builds) the node has the training
done elsewhere and commits and reveals those weights exactly as it would its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from covey.arena.backend import LocalTraining, TrainingBackend
from covey.arena.base import Log, NodeBase
from covey.arena.client import ArenaClient, Phase, TaskInfo, new_salt, submission_commitment
from covey.arena.errors import NotReady
from covey.arena.manifest import TaskManifest, fetch_manifest, fetch_training_data
from covey.arena.state import TaskRecord
from covey.chain.roles import Role
from covey.errors import ComputeError
from covey.ml import TrainConfig
from covey.storage import ArtifactStore, sha256_hex


@dataclass(frozen=True)
class Hyperparams:
    """A trainer's own choices; None keeps the task's hint. `architecture` resizes the model within its family."""

    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    weight_decay: float | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # None: derived from the trainer and the task, so no two runs start alike
    num_threads: int | None = 1  # small models train fastest on one thread, and nodes share the machine

    def train_config(self, manifest: TaskManifest, address: str, task_id: int) -> TrainConfig:
        hints = manifest.spec.train
        derived = int.from_bytes(hashlib.sha256(f"{address.lower()}:{task_id}".encode()).digest()[:4], "big")
        seed = self.seed if self.seed is not None else derived % 2**31
        return TrainConfig(
            epochs=self.epochs or hints.epochs,
            lr=self.lr or hints.lr,
            batch_size=self.batch_size or hints.batch_size,
            max_steps=self.max_steps if self.max_steps is not None else hints.max_steps,
            weight_decay=self.weight_decay if self.weight_decay is not None else hints.weight_decay,
            seed=seed,
            num_threads=self.num_threads,
        )

    def describe(self) -> str:
        parts = [f"{name}={value}" for name, value in self.architecture.items()]
        parts += [
            f"{name}={getattr(self, name)}"
            for name in ("epochs", "lr", "batch_size", "max_steps", "weight_decay", "seed")
            if getattr(self, name) is not None
        ]
        return ", ".join(parts) or "task defaults"


class TrainerNode(NodeBase):
    """One staked trainer account working through tasks phase by phase; `step` is safe to call repeatedly."""

    role = "trainer"

    def __init__(
        self,
        client: ArenaClient,
        account: LocalAccount,
        store: ArtifactStore,
        home: Path,
        hyperparams: Hyperparams | None = None,
        *,
        name: str | None = None,
        log: Log | None = None,
        progress: bool = False,
        keeper: bool = True,
        rental: TrainingBackend | None = None,
    ) -> None:
        super().__init__(client, account, store, home, name=name, log=log, progress=progress, keeper=keeper)
        self.hyperparams = hyperparams or Hyperparams()
        self.rental = rental
        self.rental_failures: dict[int, str] = {}  # task id -> why renting failed (this process tries no more)

    def step(self, task: TaskInfo, now: int) -> bool:
        record = self.state.load(task.task_id)
        if record.gave_up or record.finalized:
            return False
        phase = task.phase_at(now)
        self.reconcile_once(task, record)
        if phase == Phase.COMMITTING:
            if not record.committed:
                self.attempt(record, "commit", lambda: self.commit(task, record))
            return not record.gave_up
        if not record.committed:
            return False  # missed the submission window, or never meant to take part
        if phase == Phase.REVEALING:
            if not record.revealed:
                self.attempt(record, "reveal", lambda: self.reveal(task, record))
            return not record.gave_up
        if not record.revealed:
            self.give_up(record, "the reveal window closed before we revealed")
            return False
        if phase >= Phase.FINALISABLE:
            return self.settle(task, record)
        return True

    def done_submitting(self, task_id: int) -> bool:
        """Whether this node has revealed (or given up on) the task: all a one-shot `train` waits for."""
        record = self.state.load(task_id)
        return record.revealed or bool(record.gave_up)

    # -- the actions ----------------------------------------------------------------------------------

    def make_weights(self, task: TaskInfo, manifest: TaskManifest) -> bytes:
        """Train a model for the task on its public training data, here, and return its safetensors bytes."""
        return self._train_with(LocalTraining(progress=self.progress), task, manifest, notes={})

    def rent(self, task: TaskInfo, manifest: TaskManifest, record: TaskRecord) -> bytes:
        """Have the node's `rental` train the task's model elsewhere; return the weights to commit.

        The rental keeps what it needs to resume (the job it paid for) in the task's notes, saved at once.
        A failed rental raises `NotReady` with the reason, kept in `rental_failures`: this process does not
        rent for the task again.
        """
        assert self.rental is not None
        if task.task_id in self.rental_failures:
            raise NotReady(self.rental_failures[task.task_id])
        try:
            return self._train_with(self.rental, task, manifest, notes=_SavedNotes(self, record))
        except ComputeError as exc:
            self.rental_failures[task.task_id] = f"renting failed: {exc}"
            raise NotReady(self.rental_failures[task.task_id]) from exc

    def _train_with(
        self, backend: TrainingBackend, task: TaskInfo, manifest: TaskManifest, notes: MutableMapping[str, Any]
    ) -> bytes:
        self.log(f"{self.name}: making weights for task {task.task_id} ({self.hyperparams.describe()})")
        return backend.train(
            task.spec_hash,
            manifest.spec,
            lambda: fetch_training_data(self.store, manifest),
            self.hyperparams.train_config(manifest, self.address, task.task_id),
            self.hyperparams.architecture,
            trainer=self.account,
            store=self.store,
            notes=notes,
            log=lambda message: self.log(f"{self.name}: {message}"),
        )

    def commit(self, task: TaskInfo, record: TaskRecord) -> None:
        """Make weights (once), keep salt and weights on disk, then commit on chain."""
        if not record.salt:
            stake = self.client.effective_stake(self.address, Role.TRAINER)
            if stake < task.min_trainer_stake:
                self.give_up(record, f"trainer stake {stake} is below the task's minimum {task.min_trainer_stake}")
                return
            manifest = fetch_manifest(self.store, task.spec_hash)
            with self.timed("training"):
                weights = (
                    self.make_weights(task, manifest) if self.rental is None else self.rent(task, manifest, record)
                )
            if len(weights) > manifest.spec.size_limit_bytes:
                self.give_up(record, f"our weights ({len(weights)} bytes) exceed the task's size limit")
                return
            self.state.save_weights(task.task_id, weights)
            record.salt = new_salt().hex()
            record.weights_hash = sha256_hex(weights)
            # The salt must be on disk before the commitment is on chain, or a crash loses the reveal.
            self.state.save(record)
        self.client.commit_submission(self.account, task.task_id, self.commitment(record))
        record.committed = True
        self.state.save(record)
        self.log(f"{self.name}: committed to task {task.task_id}")

    def reveal(self, task: TaskInfo, record: TaskRecord) -> None:
        """Upload the committed weights to the store, then reveal their hash and URI."""
        weights = self.state.load_weights(task.task_id)
        if weights is None or sha256_hex(weights) != record.weights_hash:
            self.give_up(record, "the committed weights are missing from this node's state folder")
            return
        ref = self.store.put(weights)
        self.client.reveal_submission(self.account, task.task_id, record.weights_hash_bytes, record.salt_bytes, ref.uri)
        record.revealed = True
        self.state.save(record)
        self.log(f"{self.name}: revealed weights {record.weights_hash[:12]}… for task {task.task_id}")

    def commitment(self, record: TaskRecord) -> bytes:
        return submission_commitment(record.weights_hash_bytes, record.salt_bytes, self.address)

    def on_chain(self, task: TaskInfo) -> tuple[bytes, bool] | None:
        sub = self.client.submission_of(task.task_id, self.address)
        return None if sub is None else (sub.commitment, sub.revealed)


class _SavedNotes(MutableMapping[str, Any]):
    """A task record's notes that save the record on every change (a backend's memory across restarts)."""

    def __init__(self, node: TrainerNode, record: TaskRecord) -> None:
        self._node = node
        self._record = record

    def __getitem__(self, key: str) -> Any:
        return self._record.notes[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._record.notes[key] = value
        self._node.state.save(self._record)

    def __delitem__(self, key: str) -> None:
        del self._record.notes[key]
        self._node.state.save(self._record)

    def __iter__(self) -> Iterator[str]:
        return iter(self._record.notes)

    def __len__(self) -> int:
        return len(self._record.notes)
