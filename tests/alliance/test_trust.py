"""Covey's trust rule against values worked out by hand, its reference from replayed history, and the voters' votes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from covey.alliance import attacks
from covey.alliance.aggregators import (
    AggregationError,
    covey_default,
    covey_trust,
    fedavg,
    trust_cosines,
    trust_mask,
)
from covey.alliance.rules import trust_reference
from covey.alliance.scoring import trust_votes


def vecs(*rows: Sequence[float]) -> list[np.ndarray]:
    return [np.array(row, dtype=np.float64) for row in rows]


def test_the_rule_drops_zero_copied_and_misdirected_updates_and_averages_the_rest() -> None:
    reference = np.array([1.0, 0.0])
    updates = vecs(
        [1, 1],  # cosine 0.707: kept
        [0, 0],  # a free-rider: dropped
        [-1, 0.2],  # points against training: dropped
        [0.05, 1],  # cosine 0.05, at most 0.1: dropped
        [1, 1],  # a bit-identical copy of update 0: dropped
        [2, 0],  # cosine 1: kept
    )
    assert trust_mask(updates, reference) == [True, False, False, False, False, True]
    assert trust_cosines(updates, reference)[:4] == pytest.approx([2**-0.5, 0.0, -1 / 1.04**0.5, 0.05 / 1.0025**0.5])
    assert covey_trust(updates, reference).tolist() == [1.5, 0.5]


def test_the_norm_bar_is_recomputed_until_boosted_updates_are_cut() -> None:
    # Norms 1, 1.1, 1.2, 6, 40, 50, all along the reference. Median 3.6, bar 14.4: 40 and 50 go.
    # Median of 1, 1.1, 1.2, 6 is 1.15, bar 4.6: 6 goes. Median 1.1, bar 4.4: nothing more.
    updates = vecs([1, 0], [1.1, 0], [1.2, 0], [6, 0], [40, 0], [50, 0])
    assert trust_mask(updates, np.array([1.0, 0.0])) == [True, True, True, False, False, False]
    assert covey_trust(updates, np.array([1.0, 0.0])) == pytest.approx([1.1, 0.0])
    # A looser bar keeps the 6 (bar 8 x 1.15 = 9.2), never the 40.
    assert trust_mask(updates, np.array([1.0, 0.0]), max_norm_ratio=8.0) == [True, True, True, True, False, False]


def test_short_updates_pointing_elsewhere_cannot_lower_the_norm_bar() -> None:
    # Three short IPM-like updates would make the median norm 0.5 and cut the honest 3.0; they point
    # against the reference, so the bar is 4 x the median of 1, 2, 3 = 8 and every honest update stays.
    updates = vecs([1, 0.1], [2, -0.1], [3, 0], [-0.5, 0], [-0.5, 0.01], [-0.5, 0.02])
    assert trust_mask(updates, np.array([1.0, 0.0])) == [True, True, True, False, False, False]


def test_without_a_reference_the_rule_compares_to_the_covey_default_aggregate() -> None:
    # covey_default: norms 1, 1, 0.9, 5 -> clip to 1; trim 1 per side: x -> (0.8 + 0.9) / 2, y -> (0 + 0) / 2.
    updates = vecs([1, 0], [0.8, 0.6], [0.9, 0], [-5, 0])
    assert covey_default(updates) == pytest.approx([0.85, 0.0])
    assert trust_mask(updates) == [True, True, True, False]
    assert trust_mask(updates, np.zeros(2)) == [True, True, True, False]  # a zero reference means none
    assert covey_trust(updates) == pytest.approx([0.9, 0.2])


def test_a_reference_the_round_points_against_gives_way_to_the_round() -> None:
    # The last step went the wrong way (a captured round): the honest updates now point back, against
    # it. Followed blindly, the reference would drop them all and keep the attacker's [-3, 0].
    updates = vecs([1, 0.1], [1.2, -0.1], [0.9, 0.2], [-3, 0])
    poisoned_step = np.array([-1.0, 0.0])
    assert trust_mask(updates, poisoned_step) == [True, True, True, False]


def test_a_step_is_at_most_twice_the_last_one() -> None:
    # What a captured committee passes: three boosted updates and nothing else. Mean [10, 0], clipped to 2 x |[1, 0]|.
    boosted = vecs([10, 0.1], [10, 0], [10, -0.1])
    assert trust_mask(boosted, np.array([1.0, 0.0])) == [True, True, True]
    assert covey_trust(boosted, np.array([1.0, 0.0])) == pytest.approx([2.0, 0.0])
    assert covey_trust(boosted, np.array([1.0, 0.0]), max_step_ratio=5.0) == pytest.approx([5.0, 0.0])
    assert covey_trust(boosted) == pytest.approx([10.0, 0.0])  # no history, no bound


def test_when_nothing_is_trusted_the_model_stays() -> None:
    # Each update has cosine ~0.05 with the reference: noise that agrees on nothing.
    noise = vecs([0.05, 1], [0.05, -1], [0.05, 1.1])
    assert covey_trust(noise, np.array([1.0, 0.0])).tolist() == [0.0, 0.0]
    assert covey_trust(vecs([0, 0], [0, 0]), np.array([1.0, 0.0])).tolist() == [0.0, 0.0]


def test_the_rule_is_deterministic_and_returns_float64() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=50).astype(np.float32) for _ in range(7)]
    reference = rng.normal(size=50)
    first = covey_trust(updates, reference, min_cosine=-1.0)
    assert first.dtype == np.float64
    assert first.tobytes() == covey_trust([u.copy() for u in updates], reference.copy(), min_cosine=-1.0).tobytes()


def test_the_rule_rejects_inconsistent_input() -> None:
    with pytest.raises(AggregationError, match="covey_trust: reference has 3 coordinates, the updates have 2"):
        covey_trust(vecs([1, 0]), np.ones(3))
    with pytest.raises(AggregationError, match="covey_trust: min_cosine must be in"):
        trust_mask(vecs([1, 0]), np.ones(2), min_cosine=1.0)
    with pytest.raises(AggregationError, match="covey_trust: max_norm_ratio must be in"):
        covey_trust(vecs([1, 0]), np.ones(2), max_norm_ratio=0.5)
    with pytest.raises(AggregationError, match="covey_trust: max_step_ratio must be in"):
        covey_trust(vecs([1, 0]), np.ones(2), max_step_ratio=0.0)
    with pytest.raises(AggregationError, match="covey_trust: update 1 has 3 coordinates"):
        covey_trust(vecs([1, 0], [1, 0, 0]))


def test_the_reference_is_the_last_step_that_moved_the_replayed_model() -> None:
    models = {1: np.array([0.0, 0.0]), 2: np.array([1.0, 2.0]), 3: np.array([1.0, 2.0]), 4: np.array([1.5, 2.0])}
    assert trust_reference(models.__getitem__, 1) is None
    assert trust_reference(models.__getitem__, 2).tolist() == [1.0, 2.0]
    assert trust_reference(models.__getitem__, 3).tolist() == [1.0, 2.0]  # round 2 moved nothing: look further back
    assert trust_reference(models.__getitem__, 4).tolist() == [0.5, 0.0]
    assert trust_reference({1: np.zeros(2), 2: np.zeros(2)}.__getitem__, 2) is None
    with pytest.raises(AggregationError, match="round_number must be >= 1"):
        trust_reference(models.__getitem__, 0)


# Non-IID honest updates: a shared direction plus a large client-specific part, norms spread 6x,
# as Dirichlet(0.1) partitions of very different sizes give them.
N_HONEST, N_ATTACKERS, DIM = 7, 3, 40


def non_iid_round(seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The direction training went last round, seven honest updates, and the three the attackers would send."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=DIM)
    sizes = [0.5, 0.6, 0.8, 1.0, 1.5, 2.2, 3.0, 0.7, 1.8, 2.4]
    updates = [size * (shared + 1.2 * rng.normal(size=DIM)) for size in sizes]
    previous_step = shared + 0.5 * rng.normal(size=DIM)
    return previous_step, updates[:N_HONEST], updates[N_HONEST:]


ATTACKS = {
    "sign_flip": lambda honest, own: [attacks.sign_flip(u, 4.0) for u in own],
    "gaussian_noise": lambda honest, own: [
        attacks.gaussian_noise(u, i, 10 * float(np.std(u))) for i, u in enumerate(own)
    ],
    "scaled": lambda honest, own: [attacks.scaled(u, 10.0) for u in own],
    "ipm": lambda honest, own: [attacks.ipm(honest, 0.5)] * N_ATTACKERS,
    "free_rider": lambda honest, own: [attacks.free_rider(u) for u in own],
    "alie": lambda honest, own: [attacks.alie(honest, N_ATTACKERS)] * N_ATTACKERS,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_on_non_iid_updates_the_rule_keeps_every_honest_one_and_drops_or_dilutes_the_attack(
    attack: str, seed: int
) -> None:
    previous_step, honest, own = non_iid_round(seed)
    poisoned = ATTACKS[attack](honest, own)
    mask = trust_mask(honest + poisoned, previous_step)
    assert mask[:N_HONEST] == [True] * N_HONEST
    if attack == "alie":
        assert mask[N_HONEST:] == [True, False, False]  # copies count once
    else:
        assert mask[N_HONEST:] == [False] * N_ATTACKERS
        assert covey_trust(honest + poisoned, previous_step).tobytes() == fedavg(honest).tobytes()


def test_with_no_attack_the_rule_is_fedavg_where_covey_default_is_not() -> None:
    previous_step, honest, own = non_iid_round(0)
    everyone = honest + own
    assert trust_mask(everyone, previous_step) == [True] * len(everyone)
    assert covey_trust(everyone, previous_step).tobytes() == fedavg(everyone).tobytes()
    mean = fedavg(everyone)
    assert np.linalg.norm(covey_default(everyone) - mean) > 0.3 * np.linalg.norm(mean)


def test_voters_vote_for_exactly_the_updates_the_rule_averages() -> None:
    previous_step, honest, own = non_iid_round(1)
    proposals = [own[0], *honest, attacks.sign_flip(own[1], 4.0), attacks.free_rider(own[2])]
    votes = trust_votes(proposals, previous_step)
    assert votes == [True] * (1 + N_HONEST) + [False, False]
    accepted = [update for update, vote in zip(proposals, votes, strict=True) if vote]
    assert covey_trust(proposals, previous_step).tobytes() == fedavg(accepted).tobytes()
    # Re-running the rule on the accepted updates alone (what the chain's ledger does) keeps them all.
    assert trust_mask(accepted, previous_step) == [True] * len(accepted)
