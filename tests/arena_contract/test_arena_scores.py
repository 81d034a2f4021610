"""Arena scoring: staked validators commit to scores after the reveals and reveal them after the commit deadline."""

from __future__ import annotations

import os

import pytest

from covey.chain.arena_deploy import scores_commitment
from covey.errors import ChainError

COV = 10**18
SCORE = 10**6
VALIDATOR = 1


def revealed_task(world, trainers: int = 2):
    """A task whose `trainers` staked trainers have all revealed; the clock is at the scoring phase."""
    people = world.trainers(trainers)
    task = world.create_task()
    for index, trainer in enumerate(people):
        world.commit(task, trainer, bytes([index + 1]) * 32)
    world.advance_to(task.submit)
    for index, trainer in enumerate(people):
        world.reveal(task, trainer, bytes([index + 1]) * 32)
    world.advance_to(task.reveal)
    return task, people


def test_validator_commits_with_its_stake_as_weight_then_reveals(world) -> None:
    task, _ = revealed_task(world)
    (validator,) = world.validators(1, stake=1_500 * COV)
    (delegator,) = world.people(1)
    world.delegate(delegator, validator, VALIDATOR, 500 * COV)

    committed = world.commit_scores(task, validator, [7 * SCORE, 6 * SCORE])
    (event,) = world.events("ScoresCommitted", committed)
    assert event["weight"] == 2_000 * COV  # own stake plus delegations, fixed now
    world.advance_to(task.score_commit)
    revealed = world.reveal_scores(task, validator, [7 * SCORE, 6 * SCORE])

    (event,) = world.events("ScoresRevealed", revealed)
    assert event["scores"] == [7 * SCORE, 6 * SCORE]
    assert world.arena.functions.revealedScores(task.id, validator.address).call() == [7 * SCORE, 6 * SCORE]
    (record,) = world.validator_records(task)
    assert (record["validator"], record["weight"], record["revealed"]) == (validator.address, 2_000 * COV, True)
    assert world.arena.functions.validator(task.id, 0).call()[0] == validator.address
    assert world.task(task)["revealedValidatorCount"] == 1
    with pytest.raises(ChainError) as caught:
        world.chain.call(world.arena.functions.validator(task.id, 1))
    assert caught.value.reason == "arena: unknown validator"


def test_scores_are_committed_and_revealed_only_in_their_windows(world) -> None:
    (trainer,) = world.trainers(1)
    (validator,) = world.validators(1)
    task = world.create_task()
    world.commit(task, trainer, b"\x01" * 32)
    world.advance_to(task.submit)
    world.reveal(task, trainer, b"\x01" * 32)
    salt = os.urandom(32)
    commit = world.arena.functions.commitScores(task.id, scores_commitment([SCORE], salt, validator.address))
    reveal = world.arena.functions.revealScores(task.id, [SCORE], salt)

    assert world.reverts(commit, validator) == "arena: scoring not open"
    world.advance_to(task.reveal)
    world.send(commit, validator)
    assert world.reverts(reveal, validator) == "arena: score reveal not open"
    world.advance_to(task.score_commit)
    assert world.reverts(commit, validator) == "arena: scoring closed"
    world.advance_to(task.score_reveal)
    assert world.reverts(reveal, validator) == "arena: score reveal closed"


def test_commit_scores_needs_enough_validator_stake(world) -> None:
    task, _ = revealed_task(world, trainers=1)
    (light,) = world.validators(1, stake=999 * COV)
    assert world.reverts(world.arena.functions.commitScores(task.id, b"\x05" * 32), light) == (
        "arena: validator stake too low"
    )


def test_there_is_nothing_to_score_when_no_submission_was_revealed(world) -> None:
    (trainer,) = world.trainers(1)
    (validator,) = world.validators(1)
    task = world.create_task()
    world.commit(task, trainer, b"\x01" * 32)  # and never reveals
    world.advance_to(task.reveal)
    assert world.reverts(world.arena.functions.commitScores(task.id, b"\x05" * 32), validator) == (
        "arena: nothing to score"
    )


def test_a_validator_without_stake_has_no_vote(world) -> None:
    (trainer,) = world.trainers(1)
    (nobody,) = world.people(1)
    task = world.create_task(min_validator_stake=0)
    world.commit(task, trainer, b"\x01" * 32)
    world.advance_to(task.submit)
    world.reveal(task, trainer, b"\x01" * 32)
    world.advance_to(task.reveal)
    assert world.reverts(world.arena.functions.commitScores(task.id, b"\x05" * 32), nobody) == (
        "arena: no validator stake"
    )


def test_one_commitment_per_validator_none_empty_and_no_self_judging(world) -> None:
    task, (trainer, _) = revealed_task(world)
    (validator,) = world.validators(1)
    world.stake(trainer, VALIDATOR, 1_000 * COV)
    commit = world.arena.functions.commitScores

    assert world.reverts(commit(task.id, b"\x00" * 32), validator) == "arena: empty commitment"
    world.send(commit(task.id, b"\x05" * 32), validator)
    assert world.reverts(commit(task.id, b"\x06" * 32), validator) == "arena: already committed"
    assert world.reverts(commit(task.id, b"\x06" * 32), trainer) == "arena: trainer cannot validate"


def test_a_score_reveal_must_match_the_commitment_and_the_submissions(world) -> None:
    task, _ = revealed_task(world)
    honest, stranger = world.validators(2)
    scores = [5 * SCORE, 4 * SCORE]
    world.commit_scores(task, honest, scores)
    salt = world.salts[(task.id, honest.address)]
    world.advance_to(task.score_commit)
    reveal = world.arena.functions.revealScores

    assert world.reverts(reveal(task.id, scores, salt), stranger) == "arena: no score commitment"
    assert world.reverts(reveal(task.id, [5 * SCORE], salt), honest) == "arena: wrong score count"
    assert world.reverts(reveal(task.id, [*scores, SCORE], salt), honest) == "arena: wrong score count"
    assert world.reverts(reveal(task.id, [5 * SCORE, 3 * SCORE], salt), honest) == "arena: bad reveal"
    assert world.reverts(reveal(task.id, scores, os.urandom(32)), honest) == "arena: bad reveal"
    world.send(reveal(task.id, scores, salt), honest)
    assert world.reverts(reveal(task.id, scores, salt), honest) == "arena: scores already revealed"


def test_scores_above_the_cap_are_refused(world) -> None:
    task, _ = revealed_task(world)
    (validator,) = world.validators(1)
    huge = [2**128 + 1, SCORE]
    world.commit_scores(task, validator, huge)
    world.advance_to(task.score_commit)
    salt = world.salts[(task.id, validator.address)]
    assert world.reverts(world.arena.functions.revealScores(task.id, huge, salt), validator) == (
        "arena: score too large"
    )


def test_scores_follow_submission_order_skipping_unrevealed_ones(world) -> None:
    first, silent, third = world.trainers(3)
    (validator,) = world.validators(1)
    task = world.create_task()
    for index, trainer in enumerate((first, silent, third)):
        world.commit(task, trainer, bytes([index + 1]) * 32)
    world.advance_to(task.submit)
    world.reveal(task, first, b"\x01" * 32)
    world.reveal(task, third, b"\x03" * 32)
    world.advance_to(task.reveal)

    world.commit_scores(task, validator, [2 * SCORE, 3 * SCORE])  # one per revealed submission
    world.advance_to(task.score_commit)
    world.reveal_scores(task, validator, [2 * SCORE, 3 * SCORE])
    world.finalize(task)

    rows = world.submissions(task)
    assert [row["consensusScore"] for row in rows] == [2 * SCORE, 0, 3 * SCORE]
    assert [row["rank"] for row in rows] == [2, 0, 1]
