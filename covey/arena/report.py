"""A task's leaderboard as plain data: the chain's settlement once finalised, the predicted one before.

Both the CLI (`covey arena leaderboard`) and the demo print this; `--json` prints it as is.
"""

from __future__ import annotations

from typing import Any

from covey.arena.client import ArenaClient, TaskInfo
from covey.arena.scoring import Settlement, SubmissionOutcome, TaskTerms, ValidatorOutcome, from_fixed, settle


def terms_of(task: TaskInfo) -> TaskTerms:
    return TaskTerms(
        reward_pool=task.reward_pool,
        top_k=task.top_k,
        baseline_score=task.baseline_score,
        tolerance=task.tolerance,
        min_trainer_stake=task.min_trainer_stake,
        min_validator_stake=task.min_validator_stake,
    )


def predict(client: ArenaClient, task: TaskInfo) -> Settlement:
    """What `finalize` would decide now, from the revealed submissions and scores on chain."""
    submissions = client.submissions(task.task_id)
    validators = client.validators(task.task_id)
    scores = [client.revealed_scores(task.task_id, v.validator) if v.revealed else None for v in validators]
    return settle(terms_of(task), [s.revealed for s in submissions], [v.weight for v in validators], scores)


def task_report(client: ArenaClient, task_id: int, now: int | None = None) -> dict[str, Any]:
    """Ranks, consensus scores, payouts and slashes of a task: the chain's once finalised, predicted before."""
    task = client.task(task_id)
    submissions = client.submissions(task_id)
    validators = client.validators(task_id)
    if task.finalized:
        sub_outcomes = [
            SubmissionOutcome(
                s.index,
                s.revealed,
                s.consensus_score,
                s.rank,
                s.rank > 0 and s.consensus_score >= task.baseline_score,
                s.payout,
                s.slashed,
            )
            for s in submissions
        ]
        val_outcomes = [
            ValidatorOutcome(v.index, v.revealed, v.mean_deviation, v.payout, v.slashed) for v in validators
        ]
    else:
        settlement = predict(client, task)
        sub_outcomes, val_outcomes = settlement.submissions, settlement.validators
    sub_rows = [
        {
            "index": s.index,
            "trainer": s.trainer,
            "revealed": s.revealed,
            "rank": o.rank,
            "consensusScore": o.consensus_score,
            "score": from_fixed(o.consensus_score),
            "eligible": o.eligible,
            "payout": o.payout,
            "slashed": o.slashed,
            "weightsHash": s.weights_hash.hex() if s.revealed else None,
            "uri": s.uri or None,
        }
        for s, o in zip(submissions, sub_outcomes, strict=True)
    ]
    # Ranked rows first (best first), then unranked ones in commit order.
    sub_rows.sort(key=lambda row: (row["rank"] == 0, row["rank"], row["index"]))
    val_rows = [
        {
            "index": v.index,
            "validator": v.validator,
            "weight": v.weight,
            "revealed": v.revealed,
            "meanDeviation": o.mean_deviation,
            "meanDeviationScore": from_fixed(o.mean_deviation),
            "payout": o.payout,
            "slashed": o.slashed,
        }
        for v, o in zip(validators, val_outcomes, strict=True)
    ]
    winner = next((row for row in sub_rows if row["rank"] == 1 and row["eligible"]), None)
    return {
        "taskId": task_id,
        "phase": task.phase_at(client.now() if now is None else now).label,
        "settled": task.finalized,
        "rewardPool": task.reward_pool,
        "baselineScore": from_fixed(task.baseline_score),
        "tolerance": from_fixed(task.tolerance),
        "topK": task.top_k,
        "winner": winner["trainer"] if winner else None,
        "submissions": sub_rows,
        "validators": val_rows,
        "trainerPaid": sum(row["payout"] for row in sub_rows),
        "validatorPaid": sum(row["payout"] for row in val_rows),
        "refunded": task.refunded if task.finalized else None,
    }
