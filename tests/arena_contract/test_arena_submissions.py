"""Arena submissions: staked trainers commit before the deadline and reveal after it, so nobody can copy one."""

from __future__ import annotations

import os

import pytest
from web3 import Web3

from covey.chain.arena_deploy import scores_commitment, submission_commitment
from covey.errors import ChainError

COV = 10**18
TRAINER = 0


def weights(label: str) -> bytes:
    return bytes(Web3.keccak(text=f"weights:{label}"))


def test_trainer_commits_then_reveals_its_model(world) -> None:
    (trainer,) = world.trainers(1)
    task = world.create_task()

    committed = world.commit(task, trainer, weights("alice"))
    (event,) = world.events("SubmissionCommitted", committed)
    assert (event["taskId"], event["trainer"], event["index"]) == (task.id, trainer.address, 0)
    row = world.arena.functions.submission(task.id, 0).call()
    assert row[0] == trainer.address
    assert row[4] is False  # not revealed yet: nothing about the model is public

    world.advance_to(task.submit)
    revealed = world.reveal(task, trainer, weights("alice"), uri="s3://covey/alice.safetensors")

    (event,) = world.events("SubmissionRevealed", revealed)
    assert event["weightsHash"] == weights("alice")
    assert event["uri"] == "s3://covey/alice.safetensors"
    (submission,) = world.submissions(task)
    assert submission["trainer"] == trainer.address
    assert submission["weightsHash"] == weights("alice")
    assert submission["uri"] == "s3://covey/alice.safetensors"
    assert submission["revealed"] is True
    assert world.arena.functions.submissionIndexOf(task.id, trainer.address).call() == 0
    assert world.task(task)["revealedCount"] == 1


def test_commit_needs_enough_trainer_stake_and_delegations_count(world) -> None:
    task = world.create_task()
    unstaked, underweight, backed = world.people(3)
    world.stake(underweight, TRAINER, 99 * COV)
    world.stake(backed, TRAINER, 60 * COV)
    (supporter,) = world.people(1)
    world.delegate(supporter, backed, TRAINER, 40 * COV)

    for account in (unstaked, underweight):
        commitment = submission_commitment(weights("x"), b"\x00" * 32, account.address)
        fn = world.arena.functions.commitSubmission(task.id, commitment)
        assert world.reverts(fn, account) == "arena: trainer stake too low"
    world.commit(task, backed, weights("backed"))  # 60 own + 40 delegated = the 100 COV minimum
    assert world.task(task)["submissionCount"] == 1


def test_one_submission_per_trainer_and_only_before_the_deadline(world) -> None:
    first, late = world.trainers(2)
    task = world.create_task()
    world.commit(task, first, weights("one"))
    again = world.arena.functions.commitSubmission(task.id, b"\x07" * 32)
    assert world.reverts(again, first) == "arena: already submitted"
    assert world.reverts(world.arena.functions.commitSubmission(task.id, b"\x00" * 32), late) == (
        "arena: empty commitment"
    )
    assert world.reverts(world.arena.functions.commitSubmission(99, b"\x07" * 32), late) == "arena: unknown task"

    world.advance_to(task.submit)
    assert world.reverts(world.arena.functions.commitSubmission(task.id, b"\x07" * 32), late) == (
        "arena: submissions closed"
    )


def test_reveal_only_between_the_submission_and_reveal_deadlines(world) -> None:
    (trainer,) = world.trainers(1)
    task = world.create_task()
    world.commit(task, trainer, weights("early"))
    salt = world.salts[(task.id, trainer.address)]
    reveal = world.arena.functions.revealSubmission(task.id, weights("early"), salt, "file://early")

    assert world.reverts(reveal, trainer) == "arena: reveal not open"
    world.advance_to(task.reveal)
    assert world.reverts(reveal, trainer) == "arena: reveal closed"


def test_a_reveal_must_match_the_commitment(world) -> None:
    trainer, outsider = world.trainers(2)
    task = world.create_task()
    world.commit(task, trainer, weights("real"))
    salt = world.salts[(task.id, trainer.address)]
    world.advance_to(task.submit)
    reveal = world.arena.functions.revealSubmission

    assert world.reverts(reveal(task.id, weights("real"), os.urandom(32), "file://m"), trainer) == "arena: bad reveal"
    assert world.reverts(reveal(task.id, weights("other"), salt, "file://m"), trainer) == "arena: bad reveal"
    assert world.reverts(reveal(task.id, weights("real"), salt, ""), trainer) == "arena: empty uri"
    assert world.reverts(reveal(task.id, weights("real"), salt, "file://m"), outsider) == "arena: no submission"
    world.send(reveal(task.id, weights("real"), salt, "file://m"), trainer)
    assert world.reverts(reveal(task.id, weights("real"), salt, "file://m"), trainer) == "arena: already revealed"


def test_replaying_someone_elses_commitment_gains_nothing(world) -> None:
    honest, copycat = world.trainers(2)
    task = world.create_task()
    receipt = world.commit(task, honest, weights("honest"))
    seen = world.events("SubmissionCommitted", receipt)[0]["commitment"]
    # The copycat copies the commitment from the mempool or the log...
    world.send(world.arena.functions.commitSubmission(task.id, seen), copycat)
    world.advance_to(task.submit)
    world.reveal(task, honest, weights("honest"))
    # ...and even with the honest trainer's revealed salt it cannot open it: the address is inside the hash.
    salt = world.salts[(task.id, honest.address)]
    fn = world.arena.functions.revealSubmission(task.id, weights("honest"), salt, "file://stolen")
    assert world.reverts(fn, copycat) == "arena: bad reveal"


def test_the_same_weights_cannot_be_revealed_twice(world) -> None:
    original, copier = world.trainers(2)
    task = world.create_task()
    world.commit(task, original, weights("model"))
    world.commit(task, copier, weights("model"))  # learnt the weights hash off chain
    world.advance_to(task.submit)
    world.reveal(task, original, weights("model"))

    salt = world.salts[(task.id, copier.address)]
    fn = world.arena.functions.revealSubmission(task.id, weights("model"), salt, "file://copy")
    assert world.reverts(fn, copier) == "arena: duplicate weights"


def test_an_earlier_commitment_displaces_a_copy_that_revealed_first(world) -> None:
    original, copier, bystander = world.trainers(3)
    task = world.create_task()
    world.commit(task, original, weights("model"))
    world.commit(task, copier, weights("model"))  # the weights leaked to it before the deadline
    world.commit(task, bystander, weights("own"))
    world.advance_to(task.submit)
    world.reveal(task, copier, weights("model"), "file://copy")  # it races the owner to the reveal
    world.reveal(task, bystander, weights("own"))
    assert world.task(task)["revealedCount"] == 2

    receipt = world.reveal(task, original, weights("model"))
    (displaced,) = world.events("SubmissionDisplaced", receipt)
    assert (displaced["trainer"], displaced["index"], displaced["byIndex"]) == (copier.address, 1, 0)
    assert displaced["weightsHash"] == weights("model")
    assert world.task(task)["revealedCount"] == 2
    revealed = [world.arena.functions.submission(task.id, i).call()[4] for i in range(3)]
    assert revealed == [True, False, True]
    # The copy cannot come back: its commitment opens only to weights the earlier commitment owns.
    salt = world.salts[(task.id, copier.address)]
    fn = world.arena.functions.revealSubmission(task.id, weights("model"), salt, "file://copy")
    assert world.reverts(fn, copier) == "arena: duplicate weights"


def test_submission_views_name_what_is_missing(world) -> None:
    (trainer,) = world.trainers(1)
    task = world.create_task()
    world.commit(task, trainer, weights("only"))
    with pytest.raises(ChainError) as caught:
        world.chain.call(world.arena.functions.submission(task.id, 1))
    assert caught.value.reason == "arena: unknown submission"
    with pytest.raises(ChainError) as caught:
        world.chain.call(world.arena.functions.submissionIndexOf(task.id, world.owner.address))
    assert caught.value.reason == "arena: no submission"


def test_the_contract_and_python_hash_commitments_alike(world) -> None:
    (someone,) = world.people(1)
    salt = os.urandom(32)
    views = world.arena.functions
    assert views.submissionCommitment(weights("w"), salt, someone.address).call() == submission_commitment(
        weights("w"), salt, someone.address
    )
    for scores in ([], [1], [8_000_000, 0, 2**128, 123_456]):
        assert views.scoresCommitment(scores, salt, someone.address).call() == scores_commitment(
            scores, salt, someone.address
        )
