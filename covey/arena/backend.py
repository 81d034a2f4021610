"""Where a trainer's weights are trained: the `TrainingBackend` protocol, and `LocalTraining` in this process.

A trainer node works out what to train (the task's spec and public training data, its own hyper-parameters and
seed) and asks a backend for the weights to commit. `LocalTraining` trains here. The compute market's
`covey.compute.rental.Rental` rents a provider through the Market instead; the CLI hands one to the node
(`covey arena train --rent`), so the Arena never imports the market: a backend's arguments are all types of
`covey.ml`, `covey.storage` and eth-account, and a backend that hands the work elsewhere reports a failure
as a `covey.errors.ComputeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from eth_account.signers.local import LocalAccount

from covey.ml import Dataset, TaskSpec, TrainConfig, build_model, save_weights, train
from covey.storage import ArtifactStore

Log = Callable[[str], None]


class TrainingBackend(Protocol):
    """Trains a task's model for one trainer node and returns the weights to commit (safetensors bytes)."""

    def train(
        self,
        spec_hash: bytes,
        spec: TaskSpec,
        data: Callable[[], Dataset],
        config: TrainConfig,
        architecture: Mapping[str, Any],
        *,
        trainer: LocalAccount,
        store: ArtifactStore,
        notes: MutableMapping[str, Any],
        log: Log,
    ) -> bytes:
        """Train `spec`'s model on `data` with `config` and return its weights.

        `spec_hash` names the task's manifest in `store` (someone training elsewhere fetches spec and data by
        it); `data` loads the public training split; `config` holds the node's hyper-parameters over the
        task's hints, its seed included; `architecture` resizes the model within its family. `trainer` is the
        node's account (it pays for work done elsewhere, and only its key opens what comes back); `notes` is
        the node's record of this task, saved on every change, so a backend can pick up after a restart.
        Raises `covey.errors.ComputeError` when work handed elsewhere failed or timed out: the node then
        stops asking for this task in this process.
        """
        ...


@dataclass(frozen=True)
class LocalTraining:
    """Trains on this machine, in this process: the backend a trainer node uses unless it rents."""

    progress: bool = False

    def train(
        self,
        spec_hash: bytes,
        spec: TaskSpec,
        data: Callable[[], Dataset],
        config: TrainConfig,
        architecture: Mapping[str, Any],
        *,
        trainer: LocalAccount,
        store: ArtifactStore,
        notes: MutableMapping[str, Any],
        log: Log,
    ) -> bytes:
        """Train the model here (see `TrainingBackend.train`); nothing goes to `store` or `notes`."""
        dataset = data()
        # Our own seed for the initial weights too: torch's default seed would give every node the same start.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(spec.family, {**spec.architecture, **architecture})
        log(f"training {spec.family} on {len(dataset)} {spec.dataset} examples")
        result = train(model, dataset, config, progress=self.progress)
        log(f"trained {result.steps} steps in {result.seconds:.1f}s, loss {result.final_loss:.3f}")
        return save_weights(model)
