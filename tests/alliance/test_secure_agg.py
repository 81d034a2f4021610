"""Pairwise masks: the aggregator's sum of masked updates is the plain sum, while each masked update is noise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from covey.alliance import AGGREGATORS, AggregationError, fedavg, secure_agg
from covey.alliance.rules import RULE_NAMES
from covey.alliance.secure_agg import (
    DEFAULT_SCALE_BITS,
    check_rule_compatible,
    encode_fixed_point,
    mask,
    pair_seed,
    unmask_sum,
)

ROUND = b"task-7/round-3"


def seeds_for(n_parties: int) -> dict[int, dict[int, bytes]]:
    """Each party's map of peer -> pair seed, as if every pair had run an X25519 exchange."""
    seeds: dict[int, dict[int, bytes]] = {party: {} for party in range(n_parties)}
    for a, b in itertools.combinations(range(n_parties), 2):
        shared_secret = bytes([a, b]) * 16  # stands in for the exchange's output
        seeds[a][b] = seeds[b][a] = pair_seed(shared_secret, a, b)
    return seeds


def masked_round(updates: list[np.ndarray], round_tag: bytes = ROUND) -> list[np.ndarray]:
    seeds = seeds_for(len(updates))
    return [mask(update, party, seeds[party], round_tag=round_tag) for party, update in enumerate(updates)]


def test_the_masked_sum_is_the_plain_sum_to_fixed_point_precision() -> None:
    rng = np.random.default_rng(1)
    updates = [rng.normal(scale=3.0, size=1000) for _ in range(4)]
    total = unmask_sum(masked_round(updates))
    tolerance = len(updates) * 2.0 ** -(DEFAULT_SCALE_BITS + 1)
    assert np.max(np.abs(total - np.sum(updates, axis=0))) <= tolerance


def test_negative_and_tiny_values_survive_the_fixed_point() -> None:
    updates = [np.array([-1.5, 2.0**-24, 0.0]), np.array([-2.25, 0.0, -(2.0**-24)])]
    np.testing.assert_array_equal(unmask_sum(masked_round(updates)), [-3.75, 2.0**-24, -(2.0**-24)])


def test_a_single_masked_update_looks_random() -> None:
    update = np.zeros(4096)  # the most recognisable plaintext there is
    masked = masked_round([update, update, update])[0]
    assert not np.array_equal(masked, encode_fixed_point(update, 3))
    top_bits = (masked >> np.uint64(63)).astype(np.float64)
    assert abs(top_bits.mean() - 0.5) < 0.05  # a zero vector in the clear has every top bit 0
    alone = unmask_sum([masked])
    assert np.median(np.abs(alone)) > 1e9  # unmasked on its own it is nowhere near zero


def test_masks_change_every_round() -> None:
    update = np.ones(64)
    first = masked_round([update, update], round_tag=b"round-1")[0]
    second = masked_round([update, update], round_tag=b"round-2")[0]
    assert not np.array_equal(first, second)


def test_a_missing_party_leaves_the_masks_in() -> None:
    updates = [np.ones(16), np.ones(16), np.ones(16)]
    partial = unmask_sum(masked_round(updates)[:2])
    assert np.max(np.abs(partial - 2.0)) > 1e6


def test_weighted_fedavg_runs_on_masked_updates() -> None:
    updates = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 0.0])]
    weights = [1.0, 1.0, 2.0]
    # Each party sends its weighted update with its weight appended; the sum carries both.
    total = unmask_sum(masked_round([np.append(w * u, w) for u, w in zip(updates, weights, strict=True)]))
    np.testing.assert_allclose(total[:-1] / total[-1], fedavg(updates, weights=weights), atol=1e-6)


def test_rules_that_need_individual_updates_are_refused() -> None:
    every_rule = set(AGGREGATORS) | set(RULE_NAMES)  # the registry's, and the alliance's on-chain ones
    check_rule_compatible("fedavg")
    for rule_name in sorted(every_rule - {"fedavg"}):
        with pytest.raises(AggregationError, match=f"{rule_name} cannot run on masked updates"):
            check_rule_compatible(rule_name)
    assert set(secure_agg.SECURE_AGG_COMPATIBILITY) == every_rule


def test_pair_seeds_agree_for_either_order_and_differ_per_pair() -> None:
    secret = b"s" * 32
    assert pair_seed(secret, 2, 5) == pair_seed(secret, 5, 2)
    assert pair_seed(secret, 2, 5) != pair_seed(secret, 2, 6)
    with pytest.raises(AggregationError, match="two different parties"):
        pair_seed(secret, 3, 3)


def test_bad_masking_input_is_rejected() -> None:
    seed = b"k" * 32
    with pytest.raises(AggregationError, match="at least one peer"):
        mask(np.ones(3), 0, {}, round_tag=ROUND)
    with pytest.raises(AggregationError, match="party 1 lists itself"):
        mask(np.ones(3), 1, {1: seed}, round_tag=ROUND)
    with pytest.raises(AggregationError, match="pair seed is at least 16 bytes"):
        mask(np.ones(3), 0, {1: b"short"}, round_tag=ROUND)
    with pytest.raises(AggregationError, match="round_tag must be non-empty bytes"):
        mask(np.ones(3), 0, {1: seed}, round_tag=b"")
    with pytest.raises(AggregationError, match="overflows int64"):
        mask(np.array([1e12]), 0, {1: seed}, round_tag=ROUND)
    with pytest.raises(AggregationError, match="masked update 1 has 2 words, masked update 0 has 3"):
        unmask_sum([np.zeros(3, dtype=np.uint64), np.zeros(2, dtype=np.uint64)])
    with pytest.raises(AggregationError, match="masked update 0 is float64"):
        unmask_sum([np.zeros(3)])
