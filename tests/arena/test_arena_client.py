"""`ArenaClient` against the real contract on both backends: hashing, task views, phases, revert reasons."""

from __future__ import annotations

import os

import pytest

from covey.arena import Phase
from covey.arena.client import new_salt, scores_commitment, submission_commitment
from covey.arena.manifest import fetch_manifest
from covey.chain.roles import Role
from covey.errors import ChainError
from tests.arena.conftest import COV, ArenaEnv


def test_commitments_hash_exactly_as_the_contract_does(any_arena_env: ArenaEnv) -> None:
    client = any_arena_env.client
    trainer = any_arena_env.funded().address
    for _ in range(3):
        weights_hash, salt = os.urandom(32), new_salt()
        assert submission_commitment(weights_hash, salt, trainer) == client.on_chain_submission_commitment(
            weights_hash, salt, trainer
        )
    for scores in ([], [0], [972_100, 0, 2**128]):
        salt = new_salt()
        assert scores_commitment(scores, salt, trainer) == client.on_chain_scores_commitment(scores, salt, trainer)


def test_a_posted_task_reads_back_and_moves_through_its_phases(any_arena_env: ArenaEnv) -> None:
    env = any_arena_env
    creator = env.funded()
    posted = env.post(creator=creator, top_k=2, min_trainer_stake=25 * COV)
    task = env.client.task(posted.task_id)
    assert env.client.task_count() >= posted.task_id
    assert (task.creator, task.reward_pool, task.top_k) == (creator.address, 100 * COV, 2)
    assert task.min_trainer_stake == 25 * COV and task.trainer_penalty == 25 * COV // 2
    assert task.baseline_score == 900_000 and task.tolerance == 20_000  # the digits spec's 0.9, and 0.02
    assert fetch_manifest(env.store, task.spec_hash) == posted.manifest

    for phase in (Phase.REVEALING, Phase.SCORING, Phase.REVEALING_SCORES, Phase.FINALISABLE):
        env.travel_to(task.phase_deadline(phase))
        env.chain.increase_time(1)  # views read the latest block, which the travel mines
        assert env.client.phase(posted.task_id) == phase == task.phase_at(env.client.now())


def test_reverts_carry_the_contracts_reason(any_arena_env: ArenaEnv) -> None:
    env = any_arena_env
    posted = env.post(min_trainer_stake=50 * COV)
    poor = env.staked(Role.TRAINER, 10)
    with pytest.raises(ChainError) as caught:
        env.client.commit_submission(poor, posted.task_id, os.urandom(32))
    assert caught.value.reason == "arena: trainer stake too low"
    with pytest.raises(ChainError) as caught:
        env.client.finalize(poor, posted.task_id)
    assert caught.value.reason == "arena: not finalisable yet"
    with pytest.raises(ChainError) as caught:
        env.client.task(posted.task_id + 100)
    assert caught.value.reason == "arena: unknown task"


def test_views_of_one_trainer_and_validator(any_arena_env: ArenaEnv) -> None:
    env = any_arena_env
    posted = env.post()
    trainer = env.staked(Role.TRAINER, 10)
    validator = env.staked(Role.VALIDATOR, 10)
    assert env.client.submission_of(posted.task_id, trainer.address) is None
    weights_hash, salt = os.urandom(32), new_salt()
    env.client.commit_submission(trainer, posted.task_id, submission_commitment(weights_hash, salt, trainer.address))
    mine = env.client.submission_of(posted.task_id, trainer.address)
    assert mine is not None and mine.index == 0 and not mine.revealed

    task = env.client.task(posted.task_id)
    env.travel_to(task.submit_deadline)
    env.client.reveal_submission(trainer, posted.task_id, weights_hash, salt, "file:///weights")
    env.travel_to(task.reveal_deadline)
    scores, score_salt = [950_000], new_salt()
    env.client.commit_scores(validator, posted.task_id, scores_commitment(scores, score_salt, validator.address))
    record = env.client.validator_of(posted.task_id, validator.address)
    assert record is not None and record.weight == 10 * COV and not record.revealed
    env.travel_to(task.score_commit_deadline)
    env.client.reveal_scores(validator, posted.task_id, scores, score_salt)
    assert env.client.revealed_scores(posted.task_id, validator.address) == scores
    assert env.client.consensus_model(posted.task_id) is None  # not finalised yet

    env.travel_to(task.score_reveal_deadline)
    env.client.finalize(validator, posted.task_id)
    model = env.client.consensus_model(posted.task_id)
    assert model is not None and model.trainer == trainer.address and model.weights_hash == weights_hash
    assert model.consensus_score == 950_000 and model.uri == "file:///weights"
