"""Faulty actors for the demo and the tests: each must lose stake or gain nothing against honest nodes.

- `CopycatTrainer`: submits a slightly perturbed copy of weights leaked from another trainer before the
  deadline. Validators see a near-duplicate of an earlier commit and score it worst: slashed as junk.
- `ReplayCopycat`: commits blindly, then tries to reveal another trainer's weights once they are public.
  The commitment binds hash, salt and address, so the reveal reverts: slashed for not revealing.
- `JunkTrainer`: submits an untrained, randomly initialised model: below the baseline, slashed as junk.
- `LazyValidator`: commits random scores without evaluating: far from consensus, slashed.
- `ColludingValidator`: scores honestly except for one favoured trainer it inflates. With less than half
  the stake it cannot move the stake-weighted median; its deviation costs it its reward, or its stake.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from covey.arena.client import TaskInfo, new_salt
from covey.arena.errors import NotReady
from covey.arena.manifest import TaskManifest
from covey.arena.scoring import SCORE_ONE
from covey.arena.state import TaskRecord
from covey.arena.trainer import TrainerNode
from covey.arena.validator import Evaluation, ValidatorNode
from covey.ml import Dataset, TaskSpec, build_model, flatten, load_weights, save_weights, unflatten
from covey.ml.weights import read_architecture

LeakedWeights = Callable[[int], bytes | None]
"""Given a task id, the weights some other trainer has (not yet published) for it, if the leak has them."""


def leak_from(victim: TrainerNode) -> LeakedWeights:
    """A leak of `victim`'s committed weights (in a real attack: a shared bucket, a stolen laptop)."""
    return victim.state.load_weights


def perturb(weights: bytes, spec: TaskSpec, noise: float, seed: int) -> bytes:
    """`weights` plus Gaussian noise of `noise` times the weights' own spread: a new hash, the same model."""
    _, config = read_architecture(weights)
    model = load_weights(build_model(spec.family, {**spec.architecture, **(config or {})}), weights)
    vector = flatten(model)
    rng = np.random.default_rng(seed)
    jitter = (noise * float(vector.std()) * rng.standard_normal(vector.shape)).astype(np.float32)
    return save_weights(unflatten(model, vector + jitter))


class JunkTrainer(TrainerNode):
    """Submits a randomly initialised model without training it."""

    def make_weights(self, task: TaskInfo, manifest: TaskManifest) -> bytes:
        spec = manifest.spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random.SystemRandom().randrange(2**31))
            model = build_model(spec.family, {**spec.architecture, **self.hyperparams.architecture})
        self.log(f"{self.name}: submitting random weights without training")
        return save_weights(model)


class CopycatTrainer(TrainerNode):
    """Commits a tiny perturbation of another trainer's weights, obtained through a leak before the deadline."""

    def __init__(self, *args: object, leak: LeakedWeights, noise: float = 0.01, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.leak = leak
        self.noise = noise

    def make_weights(self, task: TaskInfo, manifest: TaskManifest) -> bytes:
        stolen = self.leak(task.task_id)
        if stolen is None:
            raise NotReady("the leak has nothing to copy yet")
        self.log(f"{self.name}: copying leaked weights with {self.noise:.0%} noise")
        return perturb(stolen, manifest.spec, self.noise, seed=int(self.address, 16) % 2**31)


class ReplayCopycat(TrainerNode):
    """Commits to nothing it owns, then tries to reveal the first weights another trainer reveals."""

    def commit(self, task: TaskInfo, record: TaskRecord) -> None:
        if not record.salt:
            record.salt = new_salt().hex()
            record.weights_hash = new_salt().hex()  # a placeholder: it will claim someone else's weights later
            self.state.save(record)
        self.client.commit_submission(self.account, task.task_id, self.commitment(record))
        record.committed = True
        self.state.save(record)
        self.log(f"{self.name}: committed a placeholder to task {task.task_id}")

    def reveal(self, task: TaskInfo, record: TaskRecord) -> None:
        others = [sub for sub in self.client.submissions(task.task_id) if sub.revealed and sub.trainer != self.address]
        if not others:
            raise NotReady("nobody has revealed yet")
        target = others[0]
        self.log(f"{self.name}: trying to reveal {target.trainer}'s weights as its own")
        self.client.reveal_submission(self.account, task.task_id, target.weights_hash, record.salt_bytes, target.uri)
        record.revealed = True
        self.state.save(record)


class LazyValidator(ValidatorNode):
    """Commits random scores without fetching or evaluating anything."""

    def judge(self, task: TaskInfo, manifest: TaskManifest, held_out: Dataset, revealed: list) -> Evaluation:
        rng = random.SystemRandom()
        scores = [rng.randrange(SCORE_ONE + 1) for _ in revealed]
        return Evaluation(revealed, scores, ["random guess"] * len(revealed))


class ColludingValidator(ValidatorNode):
    """Scores honestly, except that it gives `favourite`'s submission the best possible score."""

    def __init__(self, *args: object, favourite: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.favourite = favourite.lower()

    def choose_scores(self, task: TaskInfo, evaluation: Evaluation) -> list[int]:
        scores = list(evaluation.scores)
        for position, sub in enumerate(evaluation.submissions):
            if sub.trainer.lower() == self.favourite:
                scores[position] = SCORE_ONE
        return scores
