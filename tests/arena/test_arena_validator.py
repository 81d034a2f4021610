"""`ValidatorNode`: verified downloads, honest scores, worst scores for junk, gaps and copies; commit and reveal."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from covey.arena import Hyperparams, TaskInfo, TrainerNode, ValidatorNode
from covey.arena.adversaries import CopycatTrainer, leak_from, perturb
from covey.arena.manifest import TaskManifest
from covey.arena.state import TaskRecord
from covey.arena.validator import Fingerprint, fingerprint, probe_inputs
from covey.chain.roles import Role
from covey.ml import TrainConfig, default_spec, load_weights, save_weights, train
from covey.storage import sha256_hex
from tests.arena.conftest import ArenaEnv

QUICK = Hyperparams(epochs=3, lr=1e-2)


class GarbageTrainer(TrainerNode):
    """Submits bytes that are not a weights file at all."""

    def make_weights(self, task: TaskInfo, manifest: TaskManifest) -> bytes:
        return b"\x80\x04 definitely a pickle"


class WithholdingTrainer(TrainerNode):
    """Reveals a hash but never uploads the weights behind it."""

    def reveal(self, task: TaskInfo, record: TaskRecord) -> None:
        uri = "file:///nowhere/" + record.weights_hash
        self.client.reveal_submission(self.account, task.task_id, record.weights_hash_bytes, record.salt_bytes, uri)
        record.revealed = True
        self.state.save(record)


# -- fingerprints (no chain) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_pair() -> tuple[bytes, bytes]:
    spec = default_spec("digits")
    data = spec.load_split().public_train
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = spec.build_model()
        train(model, data, TrainConfig(epochs=3, lr=1e-2, seed=seed, num_threads=1), progress=False)
        models.append(save_weights(model))
    return models[0], models[1]


def _print(weights: bytes) -> Fingerprint:
    spec = default_spec("digits")
    mark = fingerprint(weights, spec, probe_inputs(spec, spec.load_split().private_validation))
    assert mark is not None
    return mark


def test_independently_trained_models_are_not_copies(trained_pair: tuple[bytes, bytes]) -> None:
    first, second = trained_pair
    assert not _print(first).near(_print(second))


def test_a_lightly_perturbed_copy_is_caught(trained_pair: tuple[bytes, bytes]) -> None:
    original = trained_pair[0]
    for noise in (0.001, 0.01, 0.1):
        copy_ = perturb(original, default_spec("digits"), noise, seed=7)
        assert sha256_hex(copy_) != sha256_hex(original)
        assert _print(original).near(_print(copy_)), noise


def test_a_copy_with_reordered_hidden_units_is_caught(trained_pair: tuple[bytes, bytes]) -> None:
    # Permuting hidden units moves every weight but computes the same function: the probes see through it.
    spec = default_spec("digits")
    model = load_weights(spec.build_model(), trained_pair[0])
    permuted = copy.deepcopy(model)
    order = torch.from_numpy(np.random.default_rng(3).permutation(128))
    with torch.no_grad():
        first, last = permuted.net[0], permuted.net[-1]
        first.weight.copy_(first.weight[order])
        first.bias.copy_(first.bias[order])
        last.weight.copy_(last.weight[:, order])
    original, shuffled = _print(trained_pair[0]), _print(save_weights(permuted))
    assert np.linalg.norm(original.weights - shuffled.weights) > 1.0
    assert original.near(shuffled)


# -- on chain ---------------------------------------------------------------------------------------------


def test_a_validator_scores_every_kind_of_submission(arena_env: ArenaEnv) -> None:
    env = arena_env
    posted = env.post()
    task_id = posted.task_id
    honest = TrainerNode(env.client, env.staked(Role.TRAINER, 10), env.store, env.home, QUICK, name="honest")
    trainers = [
        honest,
        CopycatTrainer(env.client, env.staked(Role.TRAINER, 10), env.store, env.home, leak=leak_from(honest)),
        GarbageTrainer(env.client, env.staked(Role.TRAINER, 10), env.store, env.home),
        WithholdingTrainer(env.client, env.staked(Role.TRAINER, 10), env.store, env.home, QUICK),
    ]
    validator_account = env.staked(Role.VALIDATOR, 10)
    keyless_home = env.home / "keyless"
    keyless = ValidatorNode(env.client, env.staked(Role.VALIDATOR, 10), env.store, keyless_home)
    validator = ValidatorNode(env.client, validator_account, env.store, env.home)

    task = env.client.task(task_id)
    for node in trainers:
        node.step(task, env.client.now())
    env.travel_to(task.submit_deadline)
    for node in trainers:
        node.step(env.client.task(task_id), env.client.now())
    assert env.client.task(task_id).revealed_count == 4

    env.travel_to(task.reveal_deadline)
    task = env.client.task(task_id)
    assert keyless.step(task, env.client.now())  # keeps waiting: the key may still come
    assert not keyless.state.load(task_id).committed and not keyless.state.load(task_id).gave_up
    assert validator.step(task, env.client.now())
    record = validator.state.load(task_id)
    assert record.committed
    honest_score, copy_score, garbage_score, missing_score = record.scores
    assert honest_score > 800_000
    assert copy_score == garbage_score == missing_score == 0
    assert record.notes["1"].startswith("copy of submission 0")
    assert record.notes["2"].startswith("refused: weights file is a pickle")
    assert record.notes["3"].startswith("unavailable")

    env.travel_to(task.score_commit_deadline)
    restarted = ValidatorNode(env.client, validator_account, env.store, env.home)
    restarted.step(env.client.task(task_id), env.client.now())
    assert env.client.revealed_scores(task_id, validator_account.address) == record.scores


def test_a_copy_of_an_earlier_consensus_model_is_caught(arena_env: ArenaEnv) -> None:
    env = arena_env
    validator = ValidatorNode(env.client, env.staked(Role.VALIDATOR, 10), env.store, env.home)
    first = TrainerNode(env.client, env.staked(Role.TRAINER, 10), env.store, env.home, QUICK)
    posted = env.post()
    task = env.client.task(posted.task_id)
    for phase_start in (
        0,
        task.submit_deadline,
        task.reveal_deadline,
        task.score_commit_deadline,
        task.score_reveal_deadline,
    ):
        env.travel_to(phase_start)
        for node in (first, validator):
            node.step(env.client.task(posted.task_id), env.client.now())
    winner = env.client.consensus_model(posted.task_id)
    assert winner is not None and winner.trainer == first.address

    # The next task: someone resubmits the public winner with a little noise; its author builds on it too.
    second = env.post()
    published = env.store.get(winner.weights_hash.hex())
    reuser = CopycatTrainer(
        env.client, env.staked(Role.TRAINER, 10), env.store, env.home, leak=lambda _task_id: published
    )
    author = CopycatTrainer(env.client, first.account, env.store, env.home, leak=lambda _task_id: published)
    task = env.client.task(second.task_id)
    for phase_start in (0, task.submit_deadline):
        env.travel_to(phase_start)
        for node in (reuser, author):
            node.step(env.client.task(second.task_id), env.client.now())
    env.travel_to(task.reveal_deadline)
    validator.step(env.client.task(second.task_id), env.client.now())
    record = validator.state.load(second.task_id)
    assert record.scores[0] == 0
    assert record.notes["0"].startswith(f"copy of the consensus model of task {posted.task_id}")
    assert record.scores[1] > 800_000  # the author's own model, judged on merit
