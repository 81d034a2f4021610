"""Arena settlement: consensus by stake-weighted median, ranking, top-K payouts, validator pay, slashes, refunds."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from covey.errors import ChainError

COV = 10**18
SCORE = 10**6
TRAINER, VALIDATOR = 0, 1
POOL = 1_000 * COV
TRAINER_PART = POOL * 8_000 // 10_000
VALIDATOR_PART = POOL - TRAINER_PART
TRAINER_PENALTY = 50 * COV
VALIDATOR_PENALTY = 500 * COV
ZERO_ADDRESS = "0x" + "00" * 20


def geometric(part: int, paid: int) -> list[int]:
    """The documented trainer schedule: rank i of n paid gets part * 2**(n-1-i) / (2**n - 1), rounded down."""
    return [part * 2 ** (paid - 1 - rank) // (2**paid - 1) for rank in range(paid)]


def validator_pay(part: int, weights: Sequence[int], deviations: Sequence[int], tolerance: int, n: int) -> list[int]:
    """The documented validator schedule: weight x closeness, closeness = (tol - MAD) / tol in 1e18 steps.

    `deviations` are each validator's summed absolute deviations over the `n` revealed submissions.
    """
    allowed = tolerance * n
    merits = [
        w * ((allowed - d) * 10**18 // allowed) if d <= allowed else 0 for w, d in zip(weights, deviations, strict=True)
    ]
    total = sum(merits)
    return [part * merit // total if total else 0 for merit in merits]


def s(value: float) -> int:
    """A score with 6 decimals."""
    return round(value * SCORE)


def test_finalize_waits_for_the_score_reveal_deadline_and_runs_once(world) -> None:
    (stranger,) = world.people(1)
    task = world.create_task()
    world.advance_to(task.score_commit)
    assert world.reverts(world.arena.functions.finalize(task.id), stranger) == "arena: not finalisable yet"
    assert world.reverts(world.arena.functions.finalize(task.id + 1), stranger) == "arena: unknown task"

    world.finalize(task, caller=stranger)  # anyone may settle

    assert world.reverts(world.arena.functions.finalize(task.id), stranger) == "arena: already finalised"


def test_the_median_resists_a_colluding_minority_of_stake(world) -> None:
    alice, bob, carol = world.trainers(3)
    honest = world.validators(3)
    colluders = world.validators(2)  # 40% of the validator stake, bribed by bob
    task = world.create_task()
    scores = {v.address: [s(6), s(4), s(5)] for v in honest}
    scores |= {v.address: [s(2), s(8), s(2)] for v in colluders}

    receipt = world.play(task, [alice, bob, carol], scores, [*honest, *colluders])

    rows = world.submissions(task)
    assert [row["consensusScore"] for row in rows] == [s(6), s(4), s(5)]
    assert [row["rank"] for row in rows] == [1, 3, 2]
    assert [row["payout"] for row in rows] == [geometric(TRAINER_PART, 3)[i] for i in (0, 2, 1)]
    records = world.validator_records(task)
    assert [record["slashed"] for record in records] == [0, 0, 0, VALIDATOR_PENALTY, VALIDATOR_PENALTY]
    assert [record["payout"] for record in records] == [VALIDATOR_PART // 3] * 3 + [0, 0]
    slashed = {event["account"]: event["reason"] for event in world.events("Slashed", receipt)}
    assert slashed == {v.address: "arena: scores far from consensus" for v in colluders}
    for colluder in colluders:
        assert world.effective_stake(colluder, VALIDATOR) == 1_000 * COV - VALIDATOR_PENALTY


def test_stake_not_headcount_decides_the_median(world) -> None:
    trainers = world.trainers(2)
    heavy = world.validators(2, stake=2_000 * COV)  # 4,000 COV
    many_light = world.validators(3)  # 3,000 COV in more hands
    task = world.create_task(tolerance=10 * SCORE)
    scores = {v.address: [s(6), s(3)] for v in heavy} | {v.address: [s(2), s(7)] for v in many_light}

    world.play(task, trainers, scores, [*heavy, *many_light])

    assert [row["consensusScore"] for row in world.submissions(task)] == [s(6), s(3)]


def test_a_stake_tie_takes_the_lower_score_and_a_score_tie_the_earlier_commit(world) -> None:
    first, second = world.trainers(2)
    low, high = world.validators(2)  # equal stake: exactly half the weight on each side
    task = world.create_task(tolerance=3 * SCORE)
    scores = {low.address: [s(3), s(3)], high.address: [s(5), s(5)]}

    receipt = world.play(task, [first, second], scores, [low, high])

    rows = world.submissions(task)
    assert [row["consensusScore"] for row in rows] == [s(3), s(3)]  # the lower weighted median
    assert [row["rank"] for row in rows] == [1, 2]  # same score: the earlier commit ranks first
    consensus = world.events("ConsensusReached", receipt)
    assert [(e["index"], e["rank"], e["eligible"]) for e in consensus] == [(0, 1, True), (1, 2, True)]
    expected = validator_pay(VALIDATOR_PART, [1_000 * COV] * 2, [0, 2 * s(2)], 3 * SCORE, 2)
    assert [record["payout"] for record in world.validator_records(task)] == expected
    assert [record["meanDeviation"] for record in world.validator_records(task)] == [0, s(2)]


def test_top_k_share_the_trainer_part_geometrically(world) -> None:
    trainers = world.trainers(4)
    (validator,) = world.validators(1)
    (creator,) = world.people(1)
    task = world.create_task(creator=creator, top_k=3)
    scores = {validator.address: [s(5), s(7), s(6), s(4)]}

    receipt = world.play(task, trainers, scores, [validator])

    paid = geometric(TRAINER_PART, 3)  # 4/7, 2/7 and 1/7 of the 800 COV trainer part
    rows = world.submissions(task)
    assert [row["rank"] for row in rows] == [3, 1, 2, 4]
    assert [row["payout"] for row in rows] == [paid[2], paid[0], paid[1], 0]
    assert [row["slashed"] for row in rows] == [0, 0, 0, 0]  # fourth but above the baseline: unpaid, not junk
    for trainer, row in zip(trainers, rows, strict=True):
        assert world.balance(trainer.address) == row["payout"]  # no delegators: the operator gets it all
    events = world.events("TrainerPaid", receipt)
    assert sorted((e["rank"], e["amount"]) for e in events) == [(1, paid[0]), (2, paid[1]), (3, paid[2])]
    record = world.task(task)
    assert record["trainerPaid"] == sum(paid)
    assert record["validatorPaid"] == VALIDATOR_PART
    assert record["trainerPaid"] + record["validatorPaid"] + record["refunded"] == POOL
    assert world.balance(creator.address) == record["refunded"] == TRAINER_PART - sum(paid)  # rounding dust
    assert world.balance(world.arena.address) == 0
    (finalized,) = world.events("TaskFinalized", receipt)
    assert finalized["winner"] == trainers[1].address


def test_fewer_eligible_trainers_than_k_share_the_whole_trainer_part(world) -> None:
    trainers = world.trainers(2)
    (validator,) = world.validators(1)
    task = world.create_task(top_k=5)
    world.play(task, trainers, {validator.address: [s(4), s(6)]}, [validator])

    assert [row["payout"] for row in world.submissions(task)] == [TRAINER_PART // 3, TRAINER_PART * 2 // 3]


def test_junk_below_the_baseline_is_slashed_and_never_paid(world) -> None:
    good, junk = world.trainers(2)
    (validator,) = world.validators(1)
    task = world.create_task(baseline=s(1))
    treasury_before = world.balance(world.treasury.address)

    receipt = world.play(task, [good, junk], {validator.address: [s(3), s(0.5)]}, [validator])

    good_row, junk_row = world.submissions(task)
    assert (junk_row["rank"], junk_row["payout"], junk_row["slashed"]) == (2, 0, TRAINER_PENALTY)
    assert good_row["payout"] == TRAINER_PART  # the only eligible trainer takes the whole trainer part
    assert world.events("Slashed", receipt) == [
        {
            "taskId": task.id,
            "account": junk.address,
            "role": TRAINER,
            "requested": TRAINER_PENALTY,
            "slashed": TRAINER_PENALTY,
            "reason": "arena: submission below baseline",
        }
    ]
    assert [e["eligible"] for e in world.events("ConsensusReached", receipt)] == [True, False]
    assert world.staking.functions.stakeOf(junk.address, TRAINER).call() == 100 * COV - TRAINER_PENALTY
    assert world.balance(world.treasury.address) == treasury_before + TRAINER_PENALTY


def test_committing_without_revealing_is_slashed_for_trainers_and_validators(world) -> None:
    revealer, silent_trainer = world.trainers(2)
    voter, silent_validator = world.validators(2)
    task = world.create_task()

    receipt = world.play(
        task,
        [revealer],
        {voter.address: [s(5)], silent_validator.address: [s(5)]},
        [voter],
        silent_trainers=[silent_trainer],
        silent_validators=[silent_validator],
    )

    slashed = {(e["account"], e["role"], e["slashed"], e["reason"]) for e in world.events("Slashed", receipt)}
    assert slashed == {
        (silent_trainer.address, TRAINER, TRAINER_PENALTY, "arena: submission not revealed"),
        (silent_validator.address, VALIDATOR, VALIDATOR_PENALTY, "arena: scores not revealed"),
    }
    rows = world.submissions(task)
    assert (rows[1]["revealed"], rows[1]["rank"], rows[1]["payout"], rows[1]["slashed"]) == (
        False,
        0,
        0,
        TRAINER_PENALTY,
    )
    records = world.validator_records(task)
    assert [(r["payout"], r["slashed"]) for r in records] == [(VALIDATOR_PART, 0), (0, VALIDATOR_PENALTY)]


def test_validators_are_paid_by_stake_times_closeness_and_far_off_ones_slashed(world) -> None:
    trainers = world.trainers(2)
    exact = world.validators(1)[0]
    close = world.validators(1, stake=2_000 * COV)[0]
    edge = world.validators(1)[0]
    wild = world.validators(1)[0]
    task = world.create_task(tolerance=s(1))
    scores = {
        exact.address: [s(6), s(4)],
        close.address: [s(6.2), s(4)],  # mean deviation 0.1: closeness 0.9
        edge.address: [s(5), s(3)],  # mean deviation exactly the tolerance: closeness 0, not slashed
        wild.address: [s(1), s(9)],  # mean deviation 5: slashed, paid nothing
    }

    receipt = world.play(task, trainers, scores, [exact, close, edge, wild])

    assert [row["consensusScore"] for row in world.submissions(task)] == [s(6), s(4)]
    records = world.validator_records(task)
    assert [r["meanDeviation"] for r in records] == [0, s(0.1), s(1), s(5)]
    weights = [1_000 * COV, 2_000 * COV, 1_000 * COV, 1_000 * COV]
    expected = validator_pay(VALIDATOR_PART, weights, [0, s(0.2), s(2), s(10)], s(1), 2)
    assert [r["payout"] for r in records] == expected
    assert expected[1] > expected[0] > 0 == expected[2] == expected[3]
    assert [r["slashed"] for r in records] == [0, 0, 0, VALIDATOR_PENALTY]
    assert {e["validator"] for e in world.events("ValidatorPaid", receipt)} == {exact.address, close.address}
    record = world.task(task)
    assert record["validatorPaid"] == sum(expected)
    assert record["refunded"] == POOL - record["trainerPaid"] - sum(expected)


def test_delegators_of_paid_operators_get_their_share_minus_commission(world) -> None:
    (trainer,) = world.trainers(1)
    (validator,) = world.validators(1)
    trainer_backer, validator_backer = world.people(2)
    world.delegate(trainer_backer, trainer, TRAINER, 100 * COV)  # half of the trainer's pool
    world.delegate(validator_backer, validator, VALIDATOR, 1_000 * COV)  # half of the validator's pool
    for operator in (trainer, validator):
        world.send(world.staking.functions.setCommission(1_000), operator)  # 10%
    world.advance_to(world.chain.timestamp() + 10)  # the commission delay
    task = world.create_task()

    world.play(task, [trainer], {validator.address: [s(5)]}, [validator])

    for operator, backer, role, reward in (
        (trainer, trainer_backer, TRAINER, TRAINER_PART),
        (validator, validator_backer, VALIDATOR, VALIDATOR_PART),
    ):
        delegators_gross = reward // 2
        commission = delegators_gross // 10
        assert world.balance(operator.address) == reward - delegators_gross + commission
        pending = world.staking.functions.pendingRewards(backer.address, operator.address, role).call()
        assert pending == delegators_gross - commission
        world.send(world.staking.functions.claimRewards(operator.address, role), backer)
        assert world.balance(backer.address) == delegators_gross - commission


def test_when_nothing_is_eligible_the_trainer_part_returns_to_the_creator(world) -> None:
    trainers = world.trainers(2)
    (validator,) = world.validators(1)
    (creator,) = world.people(1)
    task = world.create_task(creator=creator, baseline=s(2))

    receipt = world.play(task, trainers, {validator.address: [s(1), s(0)]}, [validator])

    assert [row["slashed"] for row in world.submissions(task)] == [TRAINER_PENALTY] * 2
    assert world.balance(creator.address) == TRAINER_PART
    assert world.events("RemainderReturned", receipt) == [
        {"taskId": task.id, "creator": creator.address, "amount": TRAINER_PART}
    ]
    (finalized,) = world.events("TaskFinalized", receipt)
    assert (finalized["winner"], finalized["trainerPaid"], finalized["validatorPaid"]) == (
        ZERO_ADDRESS,
        0,
        VALIDATOR_PART,
    )
    with pytest.raises(ChainError) as caught:
        world.chain.call(world.arena.functions.consensusModel(task.id))
    assert caught.value.reason == "arena: no consensus model"


def test_a_task_nobody_entered_refunds_the_whole_pool(world) -> None:
    (creator,) = world.people(1)
    task = world.create_task(creator=creator)
    receipt = world.finalize(task)
    assert world.balance(creator.address) == POOL
    (finalized,) = world.events("TaskFinalized", receipt)
    assert finalized["refunded"] == POOL


def test_without_any_revealed_scores_nothing_is_judged_and_only_the_silent_are_slashed(world) -> None:
    trainers = world.trainers(2)
    (silent,) = world.validators(1)
    (creator,) = world.people(1)
    task = world.create_task(creator=creator)

    receipt = world.play(task, trainers, {silent.address: [s(5), s(5)]}, [], silent_validators=[silent])

    rows = world.submissions(task)
    assert [(row["rank"], row["payout"], row["slashed"]) for row in rows] == [(0, 0, 0), (0, 0, 0)]
    assert world.events("ConsensusReached", receipt) == []
    assert [(e["account"], e["role"]) for e in world.events("Slashed", receipt)] == [(silent.address, VALIDATOR)]
    assert world.balance(creator.address) == POOL


def test_the_winner_becomes_the_consensus_model(world) -> None:
    first, second = world.trainers(2)
    (validator,) = world.validators(1)
    task = world.create_task()
    with pytest.raises(ChainError) as caught:
        world.chain.call(world.arena.functions.consensusModel(task.id))
    assert caught.value.reason == "arena: not finalised"

    world.play(task, [first, second], {validator.address: [s(3.25), s(7.5)]}, [validator])

    winner = world.submissions(task)[1]
    assert world.arena.functions.consensusModel(task.id).call() == [
        second.address,
        winner["weightsHash"],
        winner["uri"],
        s(7.5),
    ]
    assert world.phase(task) == 5


def test_a_winner_without_a_staking_pool_is_paid_in_full_through_the_staking(world) -> None:
    (free_agent,) = world.people(1)  # an open task: no trainer stake required, none held
    (validator,) = world.validators(1)
    task = world.create_task(min_trainer_stake=0)

    receipt = world.play(task, [free_agent], {validator.address: [s(5)]}, [validator])

    (paid,) = world.events("TrainerPaid", receipt)
    assert (paid["trainer"], paid["amount"]) == (free_agent.address, TRAINER_PART)
    rewards = [e for e in world.events("RewardDistributed", receipt, world.staking) if e["operator"] == paid["trainer"]]
    assert [(e["operator_amount"], e["delegators_amount"]) for e in rewards] == [(TRAINER_PART, 0)]
    assert world.balance(free_agent.address) == TRAINER_PART
    assert world.cov.functions.allowance(world.arena.address, world.staking.address).call() == 0


def test_only_modules_slash_and_a_deregistered_arena_cannot_settle_a_slash(world) -> None:
    (stranger,) = world.people(1)
    slash = world.staking.functions.slash(stranger.address, TRAINER, 1, "not a module")
    assert world.reverts(slash, stranger) == "staking: caller is not a module"

    revealer, silent = world.trainers(2)
    task = world.create_task()
    world.commit(task, revealer, b"\x01" * 32)
    world.commit(task, silent, b"\x02" * 32)
    world.advance_to(task.submit)
    world.reveal(task, revealer, b"\x01" * 32)
    world.send(world.staking.functions.setModule(world.arena.address, False), world.owner)
    world.advance_to(task.score_reveal)
    assert world.reverts(world.arena.functions.finalize(task.id), stranger) == "staking: caller is not a module"

    world.send(world.staking.functions.setModule(world.arena.address, True), world.owner)
    world.send(world.arena.functions.finalize(task.id), stranger)
    assert world.submissions(task)[1]["slashed"] == TRAINER_PENALTY
