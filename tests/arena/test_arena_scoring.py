"""Scoring as pure functions: fixed point, the stake-weighted median against minorities and ties, settlement."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from covey.arena.scoring import (
    SCORE_ONE,
    TaskTerms,
    chain_score,
    metric_value,
    rank_order,
    settle,
    to_fixed,
    weighted_median,
)
from covey.errors import ValidationError

COV = 10**18
TERMS = TaskTerms(
    reward_pool=1_000 * COV,
    top_k=3,
    baseline_score=900_000,
    tolerance=20_000,
    min_trainer_stake=100 * COV,
    min_validator_stake=500 * COV,
)


# -- fixed point ----------------------------------------------------------------------------------------


def test_scores_become_six_decimal_integers() -> None:
    assert to_fixed(0.9721) == 972_100
    assert to_fixed(1.0) == SCORE_ONE
    assert to_fixed(0.0000004) == 0 and to_fixed(0.0000005) == 1  # half rounds up
    assert to_fixed(-0.5) == 0 and to_fixed(math.nan) == 0
    with pytest.raises(ValidationError):
        to_fixed(math.inf)


def test_lower_is_better_metrics_are_turned_around_on_chain() -> None:
    # bits per character: 8.0 is a uniform guess (worst), so 2.5 bpc is better than 3.0 bpc on chain.
    assert chain_score(2.5, higher_is_better=False, worst=8.0) > chain_score(3.0, higher_is_better=False, worst=8.0)
    assert chain_score(8.0, higher_is_better=False, worst=8.0) == 0
    assert metric_value(chain_score(2.5, higher_is_better=False, worst=8.0), higher_is_better=False, worst=8.0) == 2.5
    assert chain_score(math.nan, higher_is_better=True, worst=0.0) == 0


# -- the stake-weighted median --------------------------------------------------------------------------


def test_median_follows_the_stake_not_the_head_count() -> None:
    # Three small validators say 0.2; one validator with more stake than all of them says 0.9.
    assert weighted_median([200_000, 200_000, 200_000, 900_000], [1, 1, 1, 4]) == 900_000
    assert weighted_median([200_000, 200_000, 200_000, 900_000], [1, 1, 1, 2]) == 200_000


def test_a_colluding_minority_cannot_inflate_a_score() -> None:
    honest = [110_000] * 4
    colluders = [SCORE_ONE] * 3
    stakes = [1_000] * 4 + [1_300] * 3  # 3,900 of 7,900: just under half
    assert weighted_median(honest + colluders, stakes) == 110_000


def test_exactly_half_the_stake_is_not_enough() -> None:
    # When half the stake sits at or below a score, the lower score wins: inflation needs a strict majority.
    assert weighted_median([100, 900], [5, 5]) == 100
    assert weighted_median([900, 100], [5, 5]) == 100
    assert weighted_median([100, 900], [5, 6]) == 900


def test_equal_scores_pool_their_stake_whatever_their_order() -> None:
    assert weighted_median([700, 300, 700, 300, 700], [1, 2, 1, 2, 1]) == 300
    assert weighted_median([300, 700, 700, 700, 300], [2, 1, 1, 1, 2]) == 300
    assert weighted_median([500, 500, 500], [1, 1, 1]) == 500


def test_median_edge_cases() -> None:
    assert weighted_median([], []) == 0
    assert weighted_median([123], [7]) == 123
    assert weighted_median([5, 9], [0, 0]) == 0
    with pytest.raises(ValidationError):
        weighted_median([1, 2], [1])
    with pytest.raises(ValidationError):
        weighted_median([-1], [1])


@given(
    honest=st.lists(st.integers(0, SCORE_ONE), min_size=1, max_size=8),
    honest_stake=st.integers(1, 10**6),
    attack=st.lists(st.integers(0, 2**128), min_size=1, max_size=7),
)
def test_any_minority_stays_inside_the_honest_range(honest: list[int], honest_stake: int, attack: list[int]) -> None:
    # Give the attackers as much stake as possible while staying strictly under half.
    honest_total = honest_stake * len(honest)
    attacker_stake = max(1, (honest_total - 1) // len(attack))
    if attacker_stake * len(attack) >= honest_total:
        return  # cannot be a minority with integer stakes this small
    median = weighted_median(honest + attack, [honest_stake] * len(honest) + [attacker_stake] * len(attack))
    assert min(honest) <= median <= max(honest)


def test_ranks_break_ties_by_commit_order() -> None:
    assert rank_order([500, 900, 900, 100]) == [1, 2, 0, 3]


# -- settlement -----------------------------------------------------------------------------------------


def test_a_submission_never_revealed_is_slashed_and_unranked() -> None:
    outcome = settle(TERMS, [True, False], [1_000], [[950_000]])
    silent = outcome.submissions[1]
    assert (silent.revealed, silent.rank, silent.payout, silent.slashed) == (False, 0, 0, TERMS.trainer_penalty)
    assert outcome.submissions[0].payout == TERMS.reward_pool * 8 // 10  # the only eligible one takes it all


def test_a_validator_that_never_reveals_is_slashed() -> None:
    outcome = settle(TERMS, [True], [1_000, 1_000], [[950_000], None])
    assert outcome.validators[1].slashed == TERMS.validator_penalty
    assert outcome.validators[0].payout == TERMS.reward_pool * 2 // 10


def test_junk_is_ranked_but_slashed_and_unpaid() -> None:
    outcome = settle(TERMS, [True, True], [1_000], [[950_000, 100_000]])
    good, junk = outcome.submissions
    assert good.rank == 1 and good.eligible and good.payout > 0
    assert junk.rank == 2 and not junk.eligible and junk.payout == 0 and junk.slashed == TERMS.trainer_penalty


def test_payouts_halve_by_rank_and_ties_go_to_the_earlier_commit() -> None:
    scores = [[950_000, 970_000, 970_000, 930_000]]
    outcome = settle(TERMS, [True] * 4, [1_000], scores)
    ranks = [s.rank for s in outcome.submissions]
    assert ranks == [3, 1, 2, 4]
    trainer_part = TERMS.reward_pool * 8 // 10
    assert [outcome.submissions[i].payout for i in (1, 2, 0)] == [
        trainer_part * 4 // 7,
        trainer_part * 2 // 7,
        trainer_part * 1 // 7,
    ]
    assert outcome.submissions[3].payout == 0 and outcome.submissions[3].slashed == 0  # eligible, just not top 3
    assert outcome.winner_index == 1


def test_far_off_validators_are_slashed_and_close_ones_share_by_stake() -> None:
    honest = [950_000, 960_000, 100_000]
    lazy = [10_000, 500_000, 900_000]
    outcome = settle(TERMS, [True] * 3, [1_000, 3_000, 1_000], [honest, honest, lazy])
    first, second, far = outcome.validators
    assert far.slashed == TERMS.validator_penalty and far.payout == 0
    assert second.payout == 3 * first.payout  # both sit on consensus: merit is stake x closeness
    assert first.mean_deviation == 0


def test_settlement_conserves_the_pool() -> None:
    outcome = settle(TERMS, [True, True, False], [1_000, 2_000], [[950_000, 910_000], [940_000, 920_000]])
    paid = sum(s.payout for s in outcome.submissions) + sum(v.payout for v in outcome.validators)
    assert paid == outcome.trainer_paid + outcome.validator_paid
    assert paid + outcome.refunded == TERMS.reward_pool


def test_without_validators_nothing_is_judged_and_the_pool_goes_back() -> None:
    outcome = settle(TERMS, [True, False], [], [])
    assert [s.rank for s in outcome.submissions] == [0, 0]
    assert outcome.submissions[0].slashed == 0  # not judged, so not junk
    assert outcome.submissions[1].slashed == TERMS.trainer_penalty  # but silence is still punished
    assert outcome.refunded == TERMS.reward_pool and outcome.winner_index is None


def test_inconsistent_input_is_refused() -> None:
    with pytest.raises(ValidationError):
        settle(TERMS, [True, True], [1_000], [[1]])
    with pytest.raises(ValidationError):
        settle(TERMS, [True], [1_000, 1_000], [[1]])
