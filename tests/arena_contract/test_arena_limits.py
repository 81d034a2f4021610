"""Arena limits: a task takes at most 64 submissions and 16 validators, and settling a full one fits in a block."""

from __future__ import annotations

COV = 10**18
SCORE = 10**6
BLOCK_GAS_LIMIT = 30_000_000


def test_a_full_task_refuses_more_and_still_settles_within_half_a_block(world) -> None:
    trainers = world.people(65)  # an open task: no trainer stake needed, so only gas money
    validators = world.validators(17)
    task = world.create_task(min_trainer_stake=0, top_k=64, phase_s=2_000)
    for index, trainer in enumerate(trainers[:64]):
        world.commit(task, trainer, index.to_bytes(32, "big"))
    late = world.arena.functions.commitSubmission(task.id, b"\x07" * 32)
    assert world.reverts(late, trainers[64]) == "arena: task full"

    world.advance_to(task.submit)
    for index, trainer in enumerate(trainers[:64]):
        world.reveal(task, trainer, index.to_bytes(32, "big"))
    world.advance_to(task.reveal)
    scores = [[(8 * SCORE - i * 100_000 + v * 1_000) for i in range(64)] for v in range(16)]
    for judge, row in zip(validators[:16], scores, strict=True):
        world.commit_scores(task, judge, row)
    assert world.reverts(world.arena.functions.commitScores(task.id, b"\x07" * 32), validators[16]) == (
        "arena: validators full"
    )
    world.advance_to(task.score_commit)
    for judge, row in zip(validators[:16], scores, strict=True):
        world.reveal_scores(task, judge, row)

    receipt = world.finalize(task)

    assert receipt["gasUsed"] < BLOCK_GAS_LIMIT // 2
    rows = world.submissions(task)
    assert [row["rank"] for row in rows] == list(range(1, 65))
    assert sum(row["payout"] for row in rows) + world.task(task)["validatorPaid"] + world.task(task)["refunded"] == (
        task.pool
    )
    assert rows[0]["payout"] > rows[1]["payout"] > 0
