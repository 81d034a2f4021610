"""Arena scoring as pure functions: fixed-point scores, the stake-weighted median and settlement.

`settle` is the contract's `finalize` written again in Python with the same integer arithmetic, so a
node (or a test) can predict what `finalize` will decide and check that the chain decided exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from covey.errors import ValidationError

SCORE_DECIMALS = 6
SCORE_ONE = 10**SCORE_DECIMALS
WORST_SCORE = 0  # higher is better on chain, so 0 is the score nothing can undercut

# The contract's constants (Arena.vy); `tests/arena/test_scoring_chain.py` reads them back from the chain.
BPS = 10_000
TRAINER_SHARE_BPS = 8_000
TRAINER_SLASH_BPS = 5_000
VALIDATOR_SLASH_BPS = 5_000
CLOSENESS_SCALE = 10**18


def to_fixed(score: float) -> int:
    """A score in [0, inf) as the contract's uint256 with 6 decimals (rounded half up; NaN or <= 0 is worst)."""
    if math.isnan(score) or score <= 0:
        return WORST_SCORE
    if math.isinf(score):
        raise ValidationError("a score must be finite")
    return math.floor(score * SCORE_ONE + 0.5)


def from_fixed(units: int) -> float:
    """The contract's 6-decimal score as a float."""
    return units / SCORE_ONE


def chain_score(value: float, *, higher_is_better: bool, worst: float) -> int:
    """A metric value as the contract's score, where higher is always better.

    Accuracy goes on chain as is; a lower-is-better metric bounded by `worst` (bits per character,
    worst 8.0) goes on chain as `worst - value`, so a uniform guess scores 0.
    """
    if math.isnan(value):
        return WORST_SCORE
    return to_fixed(value if higher_is_better else worst - value)


def metric_value(score: int, *, higher_is_better: bool, worst: float) -> float:
    """The inverse of `chain_score`: a contract score back in the metric's own units."""
    return from_fixed(score) if higher_is_better else worst - from_fixed(score)


def weighted_median(scores: Sequence[int], stakes: Sequence[int]) -> int:
    """The lower stake-weighted median: the smallest score at which the cumulative stake reaches half the total.

    When exactly half the stake lies at or below a score, that lower score wins, so inflating a score
    takes strictly more than half the stake. Equal scores pool their stake, so their order cannot
    matter. No stake at all gives `WORST_SCORE`. Raises `ValidationError` for mismatched or negative input.
    """
    if len(scores) != len(stakes):
        raise ValidationError(f"{len(scores)} scores but {len(stakes)} stakes")
    if any(score < 0 for score in scores) or any(stake < 0 for stake in stakes):
        raise ValidationError("scores and stakes must not be negative")
    pairs = sorted(zip(scores, stakes, strict=True), key=lambda pair: pair[0])
    total = sum(stakes)
    if total == 0:
        return WORST_SCORE
    cumulative = 0
    for score, stake in pairs:
        cumulative += stake
        if 2 * cumulative >= total:  # integers only, exactly as the contract compares
            return score
    return pairs[-1][0]  # unreachable: the loop reaches the total


def rank_order(consensus: Sequence[int]) -> list[int]:
    """Positions into `consensus`, best first; equal scores keep commit order (the earlier commit wins)."""
    return sorted(range(len(consensus)), key=lambda position: (-consensus[position], position))


@dataclass(frozen=True)
class TaskTerms:
    """The task parameters settlement depends on (token amounts in COV units, scores fixed point)."""

    reward_pool: int
    top_k: int
    baseline_score: int
    tolerance: int
    min_trainer_stake: int
    min_validator_stake: int

    @property
    def trainer_penalty(self) -> int:
        return self.min_trainer_stake * TRAINER_SLASH_BPS // BPS

    @property
    def validator_penalty(self) -> int:
        return self.min_validator_stake * VALIDATOR_SLASH_BPS // BPS


@dataclass(frozen=True)
class SubmissionOutcome:
    """What settlement gives one submission (index = commit order)."""

    index: int
    revealed: bool
    consensus_score: int = 0
    rank: int = 0  # 1 is best; 0 = not revealed, or no validator revealed
    eligible: bool = False  # at or above the baseline
    payout: int = 0
    slashed: int = 0


@dataclass(frozen=True)
class ValidatorOutcome:
    """What settlement gives one validator (index = commit order)."""

    index: int
    revealed: bool
    mean_deviation: int = 0
    payout: int = 0
    slashed: int = 0


@dataclass(frozen=True)
class Settlement:
    submissions: list[SubmissionOutcome]
    validators: list[ValidatorOutcome]
    trainer_paid: int
    validator_paid: int
    refunded: int
    winner_index: int | None


def settle(
    terms: TaskTerms,
    revealed_submissions: Sequence[bool],
    validator_weights: Sequence[int],
    validator_scores: Sequence[Sequence[int] | None],
) -> Settlement:
    """The contract's `finalize`, step for step.

    `revealed_submissions[i]` says whether submission i (commit order) was revealed;
    `validator_scores[v]` is validator v's revealed scores (one per revealed submission) or None if it
    never revealed; `validator_weights[v]` its stake weight recorded at commit.
    """
    if len(validator_weights) != len(validator_scores):
        raise ValidationError(f"{len(validator_weights)} validator weights but {len(validator_scores)} score lists")
    order = [index for index, revealed in enumerate(revealed_submissions) if revealed]
    voters = [v for v, scores in enumerate(validator_scores) if scores is not None]
    weights = [validator_weights[v] for v in voters]
    for v in voters:
        if len(validator_scores[v] or ()) != len(order):
            raise ValidationError(f"validator {v} revealed {len(validator_scores[v] or ())} scores for {len(order)}")
    judged = bool(voters)

    consensus: list[int] = []
    deviation_sums = [0] * len(voters)
    for position in range(len(order)):
        score = 0
        if judged:
            column = [validator_scores[v][position] for v in voters]  # type: ignore[index]
            score = weighted_median(column, weights)
            for voter, value in enumerate(column):
                deviation_sums[voter] += abs(value - score)
        consensus.append(score)

    ranking = rank_order(consensus)
    eligible_count = sum(1 for position in ranking if consensus[position] >= terms.baseline_score) if judged else 0
    paid_count = min(terms.top_k, eligible_count)
    trainer_part = terms.reward_pool * TRAINER_SHARE_BPS // BPS
    validator_part = terms.reward_pool - trainer_part
    denominator = (1 << paid_count) - 1

    outcomes: dict[int, SubmissionOutcome] = {}
    trainer_paid = 0
    for r, position in enumerate(ranking):
        index = order[position]
        eligible = judged and r < eligible_count
        payout = trainer_part * (1 << (paid_count - 1 - r)) // denominator if r < paid_count else 0
        slashed = terms.trainer_penalty if judged and not eligible else 0
        trainer_paid += payout
        outcomes[index] = SubmissionOutcome(
            index, True, consensus[position] if judged else 0, r + 1 if judged else 0, eligible, payout, slashed
        )
    submissions = [
        outcomes.get(index, SubmissionOutcome(index, False, slashed=terms.trainer_penalty))
        for index in range(len(revealed_submissions))
    ]

    allowed = terms.tolerance * len(order)
    merits = [
        weights[voter] * ((allowed - deviation) * CLOSENESS_SCALE // allowed) if deviation <= allowed else 0
        for voter, deviation in enumerate(deviation_sums)
    ]
    total_merit = sum(merits)
    validators: list[ValidatorOutcome] = []
    validator_paid = 0
    voter = 0
    for v, scores in enumerate(validator_scores):
        if scores is None:
            validators.append(ValidatorOutcome(v, False, slashed=terms.validator_penalty))
            continue
        mean_deviation = deviation_sums[voter] // len(order)
        if deviation_sums[voter] > allowed:
            validators.append(ValidatorOutcome(v, True, mean_deviation, slashed=terms.validator_penalty))
        else:
            payout = validator_part * merits[voter] // total_merit if total_merit > 0 else 0
            validator_paid += payout
            validators.append(ValidatorOutcome(v, True, mean_deviation, payout=payout))
        voter += 1

    return Settlement(
        submissions=submissions,
        validators=validators,
        trainer_paid=trainer_paid,
        validator_paid=validator_paid,
        refunded=terms.reward_pool - trainer_paid - validator_paid,
        winner_index=order[ranking[0]] if eligible_count > 0 else None,
    )
