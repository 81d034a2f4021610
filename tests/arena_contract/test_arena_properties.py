"""Arena settlement against a reference model: random stakes and scores, the same consensus, ranks and money."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

COV = 10**18
SCORE = 10**6
VALIDATOR = 1
TRAINER_SHARE_BPS, BPS = 8_000, 10_000
CLOSENESS_SCALE = 10**18
VALIDATOR_STAKES_COV = (10_000, 25_000, 40_000, 15_000, 30_000)  # far above the minimum: slashes never bar them


@dataclass(frozen=True)
class Settlement:
    """What the reference model says `finalize` must do."""

    consensus: list[int]
    ranks: list[int]
    trainer_payouts: list[int]
    junk: list[bool]
    validator_payouts: list[int]
    far_off: list[bool]
    refund: int


def lower_weighted_median(scores: Sequence[int], weights: Sequence[int]) -> int:
    """The first score, ascending, at which the cumulative weight reaches half of the total."""
    total = sum(weights)
    cumulative = 0
    for score, weight in sorted(zip(scores, weights, strict=True), key=lambda pair: pair[0]):
        cumulative += weight
        if 2 * cumulative >= total:
            return score
    raise ValueError("no weights")


def settle(
    pool: int, top_k: int, baseline: int, tolerance: int, weights: Sequence[int], scores: Sequence[Sequence[int]]
) -> Settlement:
    """The documented rules, written plainly: `scores[v][i]` is validator v's score for submission i."""
    count = len(scores[0])
    consensus = [lower_weighted_median([row[i] for row in scores], weights) for i in range(count)]
    order = sorted(range(count), key=lambda i: (-consensus[i], i))
    ranks = [order.index(i) + 1 for i in range(count)]
    eligible = [i for i in order if consensus[i] >= baseline]
    paid = min(top_k, len(eligible))
    trainer_part = pool * TRAINER_SHARE_BPS // BPS
    trainer_payouts = [0] * count
    for rank, i in enumerate(eligible[:paid]):
        trainer_payouts[i] = trainer_part * 2 ** (paid - 1 - rank) // (2**paid - 1)
    allowed = tolerance * count
    deviations = [sum(abs(row[i] - consensus[i]) for i in range(count)) for row in scores]
    merits = [
        w * ((allowed - d) * CLOSENESS_SCALE // allowed) if d <= allowed else 0
        for w, d in zip(weights, deviations, strict=True)
    ]
    validator_part = pool - trainer_part
    validator_payouts = [validator_part * m // sum(merits) if sum(merits) else 0 for m in merits]
    return Settlement(
        consensus=consensus,
        ranks=ranks,
        trainer_payouts=trainer_payouts,
        junk=[c < baseline for c in consensus],
        validator_payouts=validator_payouts,
        far_off=[d > allowed for d in deviations],
        refund=pool - sum(trainer_payouts) - sum(validator_payouts),
    )


score_values = st.sampled_from([0, 1, 2, 3, 5, 8]).map(lambda whole: whole * SCORE) | st.integers(0, 9 * SCORE)


@st.composite
def tasks(draw: st.DrawFn) -> tuple[int, int, int, list[int], list[list[int]]]:
    submissions = draw(st.integers(1, 4))
    voters = draw(st.lists(st.integers(0, len(VALIDATOR_STAKES_COV) - 1), min_size=1, max_size=5, unique=True))
    scores = [draw(st.lists(score_values, min_size=submissions, max_size=submissions)) for _ in voters]
    top_k = draw(st.integers(1, 4))
    baseline = draw(st.sampled_from([0, 2 * SCORE, 4 * SCORE]))
    tolerance = draw(st.sampled_from([SCORE, 3 * SCORE, 10 * SCORE]))
    return top_k, baseline, tolerance, voters, scores


def test_settlement_matches_the_reference_model_and_conserves_the_pool(world) -> None:
    trainers = world.trainers(4, stake=10_000 * COV)  # enough to stay above the minimum after slashes
    validators = [world.validators(1, stake=stake * COV)[0] for stake in VALIDATOR_STAKES_COV]
    (creator,) = world.people(1)
    pool = 999 * COV + 7  # an awkward pool, so rounding dust is real

    @settings(max_examples=12, deadline=None, database=None)
    @given(tasks())
    def check(case: tuple[int, int, int, list[int], list[list[int]]]) -> None:
        top_k, baseline, tolerance, voters, scores = case
        entrants = trainers[: len(scores[0])]
        judges = [validators[v] for v in voters]
        weights = [world.effective_stake(judge, VALIDATOR) for judge in judges]
        task = world.create_task(pool, creator=creator, top_k=top_k, baseline=baseline, tolerance=tolerance)
        before = world.balance(creator.address)

        world.play(task, entrants, {j.address: row for j, row in zip(judges, scores, strict=True)}, judges)

        expected = settle(pool, top_k, baseline, tolerance, weights, scores)
        rows = world.submissions(task)
        assert [row["consensusScore"] for row in rows] == expected.consensus
        assert [row["rank"] for row in rows] == expected.ranks
        assert [row["payout"] for row in rows] == expected.trainer_payouts
        assert [row["slashed"] > 0 for row in rows] == expected.junk
        records = world.validator_records(task)
        assert [record["weight"] for record in records] == weights
        assert [record["payout"] for record in records] == expected.validator_payouts
        assert [record["slashed"] > 0 for record in records] == expected.far_off
        assert world.task(task)["refunded"] == expected.refund
        assert world.balance(creator.address) - before == expected.refund
        assert world.balance(world.arena.address) == 0  # every pool is fully paid out or returned

    check()
