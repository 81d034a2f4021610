"""Arena tasks: creating and funding a task, topping it up, and the views that describe it."""

from __future__ import annotations

import pytest
from web3 import Web3

from covey.errors import ChainError

COV = 10**18
SCORE = 10**6
PHASES = ["committing", "revealing", "scoring", "revealing scores", "finalisable", "finalised"]


def test_creator_posts_a_task_and_the_arena_holds_its_pool(world) -> None:
    (creator,) = world.people(1)
    task = world.create_task(500 * COV, creator=creator, top_k=2)

    assert world.balance(creator.address) == 0
    assert world.balance(world.arena.address) == 500 * COV
    assert world.arena.functions.taskCount().call() == 1
    record = world.task(task)
    assert record["creator"] == creator.address
    assert record["rewardPool"] == 500 * COV
    assert record["topK"] == 2
    assert (record["submitDeadline"], record["revealDeadline"]) == (task.submit, task.reveal)
    assert (record["scoreCommitDeadline"], record["scoreRevealDeadline"]) == (task.score_commit, task.score_reveal)
    assert record["trainerPenalty"] == 50 * COV  # half of the 100 COV minimum trainer stake
    assert record["validatorPenalty"] == 500 * COV  # half of the 1,000 COV minimum validator stake
    assert not record["finalized"]
    assert world.phase(task) == 0

    second = world.create_task(1 * COV)
    assert second.id == task.id + 1
    assert world.arena.functions.taskCount().call() == 2


def test_task_creation_logs_the_task_and_its_funding(world) -> None:
    world.send(world.cov.functions.approve(world.arena.address, 7 * COV), world.owner)
    now = world.chain.timestamp()
    spec = Web3.keccak(text="spec: tiny shakespeare, char-level, 1M params, bits per char")
    fn = world.arena.functions.createTask(
        spec, 7 * COV, now + 10, now + 20, now + 30, now + 40, 1, 0, 0, 2 * SCORE, SCORE // 2
    )
    receipt = world.send(fn, world.owner)

    (created,) = world.events("TaskCreated", receipt)
    assert created["taskId"] == 1
    assert created["specHash"] == spec
    assert created["rewardPool"] == 7 * COV
    assert created["baselineScore"] == 2 * SCORE
    assert created["tolerance"] == SCORE // 2
    (funded,) = world.events("PoolFunded", receipt)
    assert funded == {"taskId": 1, "funder": world.owner.address, "amount": 7 * COV, "rewardPool": 7 * COV}


@pytest.mark.parametrize(
    ("offsets", "top_k", "tolerance", "reason"),
    [
        ((-1_001, 20, 30, 40), 1, SCORE, "arena: deadline in the past"),
        ((10, 10, 30, 40), 1, SCORE, "arena: deadlines not increasing"),
        ((10, 20, 15, 40), 1, SCORE, "arena: deadlines not increasing"),
        ((10, 20, 30, 30), 1, SCORE, "arena: deadlines not increasing"),
        ((10, 20, 30, 40), 0, SCORE, "arena: topK is zero"),
        ((10, 20, 30, 40), 65, SCORE, "arena: topK above max submissions"),
        ((10, 20, 30, 40), 1, 0, "arena: zero tolerance"),
        ((10, 20, 30, 40), 1, 2**128 + 1, "arena: tolerance too large"),
    ],
)
def test_create_task_rejects_bad_parameters(world, offsets, top_k, tolerance, reason) -> None:
    now = world.chain.timestamp()
    deadlines = [now + 1_000 + offset for offset in offsets]
    fn = world.arena.functions.createTask(b"\x01" * 32, 0, *deadlines, top_k, 0, 0, 0, tolerance)
    assert world.reverts(fn, world.owner) == reason


def test_create_task_needs_the_pool_approved(world) -> None:
    now = world.chain.timestamp()
    fn = world.arena.functions.createTask(b"\x01" * 32, 5 * COV, now + 10, now + 20, now + 30, now + 40, 1, 0, 0, 0, 1)
    assert world.reverts(fn, world.owner) == "erc20: insufficient allowance"


def test_a_task_may_start_with_an_empty_pool_and_anyone_may_fund_it(world) -> None:
    task = world.create_task(0)
    assert world.task(task)["rewardPool"] == 0
    (sponsor,) = world.people(1)
    world.give_cov(sponsor, 30 * COV)
    world.send(world.cov.functions.approve(world.arena.address, 30 * COV), sponsor)

    receipt = world.send(world.arena.functions.addToPool(task.id, 30 * COV), sponsor)

    assert world.events("PoolFunded", receipt) == [
        {"taskId": task.id, "funder": sponsor.address, "amount": 30 * COV, "rewardPool": 30 * COV}
    ]
    assert world.task(task)["rewardPool"] == 30 * COV
    assert world.balance(world.arena.address) == 30 * COV


def test_add_to_pool_refuses_zero_unknown_tasks_and_finalised_tasks(world) -> None:
    task = world.create_task(10 * COV)
    world.send(world.cov.functions.approve(world.arena.address, 10 * COV), world.owner)
    assert world.reverts(world.arena.functions.addToPool(task.id, 0), world.owner) == "arena: zero amount"
    assert world.reverts(world.arena.functions.addToPool(99, COV), world.owner) == "arena: unknown task"
    assert world.reverts(world.arena.functions.addToPool(0, COV), world.owner) == "arena: unknown task"

    world.send(world.arena.functions.addToPool(task.id, COV), world.owner)  # still open after the deadlines
    world.finalize(task)
    assert world.reverts(world.arena.functions.addToPool(task.id, COV), world.owner) == "arena: already finalised"


def test_owner_tops_up_a_pool_from_the_treasury_within_its_allowance(world) -> None:
    task = world.create_task(10 * COV)
    world.give_cov_to(world.treasury.address, 100 * COV)
    world.send(world.treasury.functions.setAllowance(world.arena.address, world.cov.address, 40 * COV), world.owner)
    (stranger,) = world.people(1)

    fund = world.arena.functions.fundFromTreasury
    assert world.reverts(fund(task.id, 10 * COV), stranger) == "ownable: caller is not the owner"
    assert world.reverts(fund(task.id, 41 * COV), world.owner) == "treasury: allowance exceeded"
    receipt = world.send(fund(task.id, 40 * COV), world.owner)

    assert world.events("PoolFunded", receipt) == [
        {"taskId": task.id, "funder": world.treasury.address, "amount": 40 * COV, "rewardPool": 50 * COV}
    ]
    assert world.balance(world.treasury.address) == 60 * COV
    assert world.balance(world.arena.address) == 50 * COV
    assert world.task(task)["rewardPool"] == 50 * COV


def test_phase_follows_the_deadlines(world) -> None:
    task = world.create_task(1 * COV)
    seen = [PHASES[world.phase(task)]]
    for deadline in (task.submit, task.reveal, task.score_commit, task.score_reveal):
        world.advance_to(deadline)
        seen.append(PHASES[world.phase(task)])
    world.finalize(task)
    seen.append(PHASES[world.phase(task)])
    assert seen == PHASES


def test_views_of_an_unknown_task_say_so(world) -> None:
    views = world.arena.functions
    (someone,) = world.people(1)
    for call in (
        views.task(1),
        views.phase(1),
        views.submissions(1),
        views.validatorsOf(1),
        views.revealedScores(1, someone.address),
        views.consensusModel(1),
    ):
        with pytest.raises(ChainError) as caught:
            world.chain.call(call)
        assert caught.value.reason == "arena: unknown task"


def test_the_arena_publishes_its_wiring_and_rules(world) -> None:
    views = world.arena.functions
    assert views.token().call() == world.cov.address
    assert views.staking().call() == world.staking.address
    assert views.treasury().call() == world.treasury.address
    assert views.owner().call() == world.owner.address
    assert world.staking.functions.isModule(world.arena.address).call()
    assert (views.MAX_SUBMISSIONS().call(), views.MAX_VALIDATORS().call()) == (64, 16)
    assert (views.TRAINER_SHARE_BPS().call(), views.TRAINER_SLASH_BPS().call()) == (8_000, 5_000)
    assert views.VALIDATOR_SLASH_BPS().call() == 5_000
