"""`TrainerNode`: fetch a task's manifest and public training data, train, commit, then upload and reveal.

The weights stay on this machine until the reveal: nobody can copy what was never published, and the
commitment (with the trainer's address inside) cannot be replayed by anyone else. With a `Rental` the
node rents the training from a compute-market provider instead and commits and reveals the rented
weights exactly as it would its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from eth_account.signers.local import LocalAccount

from covey.arena.base import Log, NodeBase, NotReady
from covey.arena.client import ArenaClient, Phase, TaskInfo, new_salt, submission_commitment
from covey.arena.manifest import TaskManifest, fetch_manifest, fetch_training_data
from covey.arena.state import TaskRecord
from covey.chain.roles import Role
from covey.compute.client import (
    ComputeTimeout,
    JobStatus,
    MarketClient,
    RentalError,
    RentedTraining,
    Resources,
    collect_training,
    post_training,
)
from covey.ml import TrainConfig, build_model, save_weights, score_submission, train
from covey.ml.evaluate import get_metric
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


@dataclass(frozen=True)
class Rental:
    """Rent the training from the compute market instead of training on this machine.

    The trainer's account buys: it escrows `max_price_per_unit_second x units x seconds_per_unit` µUSD
    (the Market refunds what the winning bid does not use). Each unit trains the task's model with the
    node's hyper-parameters and its own seed; with several units the best on the public training split
    is submitted. The provider seals the weights to the trainer's key before it publishes anything, so, like
    local weights, nobody else can read them (or commit to their hash) before the trainer reveals them.
    """

    market: MarketClient
    max_price_per_unit_second: int = 100
    units: int = 1
    seconds_per_unit: int = 60
    needs: Resources = field(default_factory=lambda: Resources(1, 2048, 0))
    bid_window_s: int = 10
    heartbeat_interval_s: int = 30
    timeout_s: float = 900.0


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
        rental: Rental | None = None,
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
        """Train a model for the task on its public training data and return its safetensors bytes."""
        data = fetch_training_data(self.store, manifest)
        spec = manifest.spec
        config = self.hyperparams.train_config(manifest, self.address, task.task_id)
        # Our own seed for the initial weights too: torch's default seed would give every node the same start.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(spec.family, {**spec.architecture, **self.hyperparams.architecture})
        self.log(
            f"{self.name}: training {spec.family} on {len(data)} {spec.dataset} examples "
            f"({self.hyperparams.describe()})"
        )
        result = train(model, data, config, progress=self.progress)
        self.log(f"{self.name}: trained {result.steps} steps in {result.seconds:.1f}s, loss {result.final_loss:.3f}")
        return save_weights(model)

    def rent(self, task: TaskInfo, manifest: TaskManifest, record: TaskRecord) -> bytes:
        """Have a compute-market provider train the task's model; return the weights to commit.

        The job id goes into the task's notes before the wait, so a restart (or a second try after a
        time-out) collects the job already paid for instead of posting another. A failed rental raises
        `NotReady` with the reason, kept in `rental_failures`: this process does not post again.
        """
        assert self.rental is not None
        rental = self.rental
        if task.task_id in self.rental_failures:
            raise NotReady(self.rental_failures[task.task_id])
        try:
            job_id = int(record.notes.get("rented_job", 0))
            if not job_id or rental.market.job(job_id).status == JobStatus.CANCELLED:
                job_id = self._post_rental(task, manifest, rental)
                record.notes["rented_job"] = job_id
                self.state.save(record)
            else:
                self.log(f"{self.name}: collecting rented job {job_id} again")
            rented = collect_training(
                rental.market, self.store, job_id, self.account, timeout_s=rental.timeout_s, wait_verified=False
            )
        except (RentalError, ComputeTimeout) as exc:
            self.rental_failures[task.task_id] = f"renting failed: {exc}"
            if not isinstance(exc, ComputeTimeout):  # a timed-out job may still deliver: keep it to collect
                record.notes.pop("rented_job", None)
                self.state.save(record)
            raise NotReady(self.rental_failures[task.task_id]) from exc
        unit, weights = self._best_rented(manifest, rented)
        output = rented.units[unit]
        record.notes["rental"] = {"job": output.job_id, "unit": unit, "provider": output.provider}
        self.log(
            f"{self.name}: rented job {job_id}: provider {output.provider[:10]} trained unit {unit} "
            f"({rented.unit_weights[unit].digest[:12]}…)"
        )
        return weights

    def _post_rental(self, task: TaskInfo, manifest: TaskManifest, rental: Rental) -> int:
        config = self.hyperparams.train_config(manifest, self.address, task.task_id)
        hyperparams = {
            "epochs": config.epochs,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "max_steps": config.max_steps,
            "weight_decay": config.weight_decay,
            "architecture": self.hyperparams.architecture,
        }
        job_id = post_training(
            rental.market,
            self.store,
            task.spec_hash.hex(),
            hyperparams,
            self.account,
            seeds=[(config.seed + offset) % 2**31 for offset in range(rental.units)],
            max_price_per_unit_second=rental.max_price_per_unit_second,
            seconds_per_unit=rental.seconds_per_unit,
            needs=rental.needs,
            bid_window_s=rental.bid_window_s,
            heartbeat_interval_s=rental.heartbeat_interval_s,
        )
        self.log(
            f"{self.name}: posted compute job {job_id} for task {task.task_id}: {rental.units} unit(s) "
            f"at up to {rental.max_price_per_unit_second} µUSD/unit-s ({self.hyperparams.describe()})"
        )
        return job_id

    def _best_rented(self, manifest: TaskManifest, rented: RentedTraining) -> tuple[int, bytes]:
        """The unit whose weights score best on the public training split (the only unit, if just one)."""
        if len(rented.unit_weights) == 1:
            return min(rented.unit_weights), rented.weights
        spec = manifest.spec
        metric = get_metric(spec.metric)
        data = fetch_training_data(self.store, manifest)
        best: tuple[int, bytes, float] | None = None
        for unit, weights in sorted(rented.unit_bytes.items()):
            score = score_submission(weights, spec, data)
            if score.valid and (best is None or metric.better(score.value, best[2])):
                best = (unit, weights, score.value)
        if best is None:
            raise RentalError(f"no rented unit of job {rented.job_id} gave weights valid for the task")
        return best[0], best[1]

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
