"""Every robust rule against values worked out by hand on a few tiny updates, and every way input can be wrong."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from covey.alliance import (
    AGGREGATORS,
    AggregationError,
    aggregate,
    coordinate_median,
    covey_default,
    fedavg,
    fltrust,
    fltrust_committee,
    fltrust_trust_scores,
    krum,
    krum_scores,
    multi_krum,
    multi_krum_selection,
    norm_clip,
    trimmed_mean,
)
from covey.errors import ValidationError


def vecs(*rows: Sequence[float]) -> list[np.ndarray]:
    return [np.array(row, dtype=np.float64) for row in rows]


# Five points on the line y = -x; squared distances are twice those of 0, 1, 3, 5, 20 on a line.
# With f = 1 each score sums the 2 nearest: 0 -> 2*(1+9), 1 -> 2*(1+4), 3 -> 2*(4+4), 5 -> 2*(4+16),
# 20 -> 2*(225+289).
KRUM_UPDATES = vecs([0, 0], [1, -1], [3, -3], [5, -5], [20, -20])


def test_fedavg_is_the_plain_and_the_weighted_mean() -> None:
    updates = vecs([1, 2], [3, 4], [5, 0])
    np.testing.assert_array_equal(fedavg(updates), [3.0, 2.0])
    np.testing.assert_array_equal(fedavg(updates, weights=[1, 1, 2]), [3.5, 1.5])  # ([1,2]+[3,4]+[10,0]) / 4
    np.testing.assert_array_equal(fedavg(updates, weights=[0, 0, 7]), [5.0, 0.0])


def test_fedavg_rejects_bad_weights() -> None:
    updates = vecs([1, 2], [3, 4])
    with pytest.raises(AggregationError, match="got 3 weights for 2 updates"):
        fedavg(updates, weights=[1, 1, 1])
    with pytest.raises(AggregationError, match="non-negative"):
        fedavg(updates, weights=[1, -1])
    with pytest.raises(AggregationError, match="sum to zero"):
        fedavg(updates, weights=[0, 0])


def test_coordinate_median_takes_the_middle_or_the_mean_of_the_two_middles() -> None:
    np.testing.assert_array_equal(coordinate_median(vecs([1, 5], [3, -1], [2, 100])), [2.0, 5.0])
    # Sorted: [1, 2, 3, 10] -> (2 + 3) / 2; [-1, 0, 5, 100] -> (0 + 5) / 2.
    np.testing.assert_array_equal(coordinate_median(vecs([1, 5], [3, -1], [2, 100], [10, 0])), [2.5, 2.5])


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    updates = vecs([1, -10], [2, 0], [3, 1], [4, 2], [100, 3])
    # floor(0.2 * 5) = 1 at each end: [2, 3, 4] -> 3 and [0, 1, 2] -> 1.
    np.testing.assert_array_equal(trimmed_mean(updates, 0.2), [3.0, 1.0])
    np.testing.assert_allclose(trimmed_mean(updates, 0.0), [22.0, -0.8])
    # floor(0.3 * 10) must be 3 although 0.3 * 10 is 3.0000000000000004 in binary.
    values = [1, 2, 3, 10, 20, 40, 80, 90, 95, 99]
    assert trimmed_mean(vecs(*([v] for v in values)), 0.3)[0] == (10 + 20 + 40 + 80) / 4


def test_trimmed_mean_rejects_a_ratio_that_leaves_nothing() -> None:
    with pytest.raises(AggregationError, match=r"trim_ratio must be in \[0, 0.5\)"):
        trimmed_mean(vecs([1.0], [2.0]), 0.5)
    with pytest.raises(AggregationError, match="trim_ratio"):
        trimmed_mean(vecs([1.0], [2.0]), -0.1)


def test_krum_scores_and_picks_the_most_central_update() -> None:
    np.testing.assert_array_equal(krum_scores(KRUM_UPDATES, n_byzantine=1), [20.0, 10.0, 16.0, 40.0, 1028.0])
    np.testing.assert_array_equal(krum(KRUM_UPDATES, n_byzantine=1), [1.0, -1.0])


def test_krum_breaks_ties_by_the_lower_index() -> None:
    square = vecs([0, 0], [1, 0], [0, 1], [1, 1], [10, 10])  # the four corners all score 1 + 1
    np.testing.assert_array_equal(krum(square, n_byzantine=1), [0.0, 0.0])


def test_multi_krum_averages_the_m_best_scores() -> None:
    assert multi_krum_selection(KRUM_UPDATES, n_byzantine=1, m=3) == [0, 1, 2]
    np.testing.assert_allclose(multi_krum(KRUM_UPDATES, n_byzantine=1, m=3), [4 / 3, -4 / 3])
    np.testing.assert_allclose(multi_krum(KRUM_UPDATES, n_byzantine=1, m=4), [9 / 4, -9 / 4])
    np.testing.assert_array_equal(multi_krum(KRUM_UPDATES, n_byzantine=1, m=1), krum(KRUM_UPDATES, n_byzantine=1))


def test_krum_needs_more_than_2f_plus_2_updates() -> None:
    with pytest.raises(AggregationError, match=r"n=4 with n_byzantine=1 \(needs n >= 5\)"):
        krum(KRUM_UPDATES[:4], n_byzantine=1)
    with pytest.raises(AggregationError, match="n_byzantine must be >= 0"):
        krum(KRUM_UPDATES, n_byzantine=-1)
    with pytest.raises(AggregationError, match="n_byzantine must be an integer"):
        krum(KRUM_UPDATES, n_byzantine=True)
    with pytest.raises(AggregationError, match="m must be between 1 and 4, got 5"):
        multi_krum(KRUM_UPDATES, n_byzantine=1, m=5)
    with pytest.raises(AggregationError, match="m must be between 1 and 4, got 0"):
        multi_krum(KRUM_UPDATES, n_byzantine=1, m=0)


# FLTrust against root [1, 0]: [2, 0] has cosine 1 and is rescaled to [1, 0]; [0, 3] is orthogonal
# (trust 0); [1, 1] has cosine 1/sqrt(2) and is rescaled to [1/sqrt(2), 1/sqrt(2)]; [-1, 0] is
# opposite (ReLU -> 0). Mean = ([1, 0] + [1/2, 1/2]) / (1 + 1/sqrt(2)).
FLTRUST_ROOT = np.array([1.0, 0.0])
FLTRUST_UPDATES = vecs([2, 0], [0, 3], [1, 1], [-1, 0])


def test_fltrust_trust_scores_are_relu_cosines() -> None:
    np.testing.assert_allclose(fltrust_trust_scores(FLTRUST_UPDATES, FLTRUST_ROOT), [1, 0, 1 / math.sqrt(2), 0])


def test_fltrust_is_the_trust_weighted_mean_of_rescaled_updates() -> None:
    expected = np.array([1.5, 0.5]) / (1 + 1 / math.sqrt(2))
    np.testing.assert_allclose(fltrust(FLTRUST_UPDATES, FLTRUST_ROOT), expected)


def test_fltrust_can_drop_updates_much_longer_than_the_root() -> None:
    updates = vecs([2, 0], [1, 1], [30, 30])
    # Kept: 1 * [1, 0] + (1/sqrt(2)) * [1, 1]/sqrt(2) * 2 = [2, 1], over trust 1 + sqrt(2).
    np.testing.assert_allclose(fltrust(updates, FLTRUST_ROOT), np.array([2.0, 1.0]) / (1 + math.sqrt(2)))
    # [30, 30] has norm 42.4 > 3 * 1, so only the first two count.
    np.testing.assert_allclose(
        fltrust(updates, FLTRUST_ROOT, max_norm_ratio=3), np.array([1.5, 0.5]) / (1 + 1 / math.sqrt(2))
    )


def test_fltrust_without_any_trusted_update_leaves_the_model_unchanged() -> None:
    np.testing.assert_array_equal(fltrust(vecs([-1, 0], [0, 1], [0, 0]), FLTRUST_ROOT), [0.0, 0.0])


def test_fltrust_needs_a_root_with_a_direction() -> None:
    with pytest.raises(AggregationError, match="root_update is all zeros"):
        fltrust(FLTRUST_UPDATES, np.zeros(2))
    with pytest.raises(AggregationError, match="root_update has 3 coordinates, the updates have 2"):
        fltrust(FLTRUST_UPDATES, np.ones(3))
    with pytest.raises(AggregationError, match="max_norm_ratio"):
        fltrust(FLTRUST_UPDATES, FLTRUST_ROOT, max_norm_ratio=0)


def test_fltrust_committee_takes_the_stake_weighted_median_trust() -> None:
    roots = vecs([1, 0], [1, 0], [0, 1])
    updates = vecs([2, 0], [0, 2])
    # Trust of [2, 0] per member is [1, 1, 0], of [0, 2] it is [0, 0, 1].
    np.testing.assert_allclose(fltrust_committee(updates, roots), [1.0, 0.0])
    # With most stake on the third member, its root decides both medians.
    np.testing.assert_allclose(fltrust_committee(updates, roots, stakes=[1, 1, 5]), [0.0, 1.0])
    with pytest.raises(AggregationError, match="stakes must be finite and positive"):
        fltrust_committee(updates, roots, stakes=[1, 0, 1])
    with pytest.raises(AggregationError, match="got 2 stakes for 3 root updates"):
        fltrust_committee(updates, roots, stakes=[1, 1])


def test_norm_clip_shortens_only_long_updates() -> None:
    clipped = norm_clip(vecs([3, 4], [0.3, 0.4], [0, 0]), max_norm=1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    with pytest.raises(AggregationError, match=r"max_norm must be in \(0, inf\)"):
        norm_clip(vecs([3, 4]), max_norm=0.0)


def test_covey_default_clips_to_the_median_norm_then_trims() -> None:
    # Norms 1, 2, 3, 4, 100 -> median 3: [-100, 0] becomes [-3, 0].
    updates = vecs([1, 0], [2, 0], [3, 0], [4, 0], [-100, 0])
    np.testing.assert_allclose(covey_default(updates, n_byzantine=0), [(1 + 2 + 3 + 3 - 3) / 5, 0.0])
    np.testing.assert_allclose(covey_default(updates, n_byzantine=1), [(1 + 2 + 3) / 3, 0.0])
    # Three updates: norms sqrt(5), sqrt(13), sqrt(12500); [100, -50] shrinks to ~[3.22, -1.61]; the median is left.
    np.testing.assert_allclose(covey_default(vecs([1, 2], [2, 3], [100, -50])), [2.0, 2.0])


def test_covey_default_trims_30_percent_by_default() -> None:
    values = [1, 2, 3, 10, 20, 40, 80, 90, 95, 99]
    # Median norm (20 + 40) / 2 = 30 clips to [1, 2, 3, 10, 20, 30, 30, 30, 30, 30]; trimming 3 keeps 10, 20, 30, 30.
    assert covey_default(vecs(*([v] for v in values)))[0] == (10 + 20 + 30 + 30) / 4
    with pytest.raises(AggregationError, match="n_byzantine must be between 0 and 4, got 5"):
        covey_default(vecs(*([v] for v in values)), n_byzantine=5)


def test_rules_return_float64_and_the_same_bits_every_time() -> None:
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=50).astype(np.float32) for _ in range(7)]
    for name, kwargs in RULE_KWARGS.items():
        first = aggregate(name, updates, **kwargs)
        assert first.dtype == np.float64, name
        assert first.tobytes() == aggregate(name, [u.copy() for u in updates], **kwargs).tobytes(), name


RULE_KWARGS: dict[str, dict[str, object]] = {
    "fedavg": {},
    "coordinate_median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"n_byzantine": 1},
    "multi_krum": {"n_byzantine": 1, "m": 3},
    "fltrust": {"root_update": np.ones(50)},
    "fltrust_committee": {"root_updates": [np.ones(50), -np.ones(50)]},
    "covey_default": {},
}


def test_the_registry_lists_every_rule_with_its_parameters() -> None:
    assert set(AGGREGATORS) == set(RULE_KWARGS)
    np.testing.assert_array_equal(aggregate("krum", KRUM_UPDATES, n_byzantine=1), krum(KRUM_UPDATES, n_byzantine=1))
    with pytest.raises(AggregationError, match="unknown aggregation rule 'bulyan'; known rules: coordinate_median"):
        aggregate("bulyan", KRUM_UPDATES)
    with pytest.raises(AggregationError, match="krum: missing a required argument: 'n_byzantine'"):
        aggregate("krum", KRUM_UPDATES)
    with pytest.raises(AggregationError, match="fedavg: got an unexpected keyword argument 'n_byzantine'"):
        aggregate("fedavg", KRUM_UPDATES, n_byzantine=1)


@pytest.mark.parametrize("rule_name", sorted(RULE_KWARGS))
@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "no updates to aggregate"),
        (vecs([1, 2], [1, 2, 3]), "update 1 has 3 coordinates, update 0 has 2"),
        (vecs([1, 2], [np.nan, 2]), r"update 1 has 1 NaN or infinite coordinates \(the first at index 0\)"),
        (vecs([1, 2], [1, np.inf]), r"update 1 has 1 NaN or infinite coordinates \(the first at index 1\)"),
        ([np.ones((2, 2))], r"update 0 has shape \(2, 2\); updates are 1-D"),
        ([np.array([], dtype=np.float64)], "update 0 is empty"),
        ([np.array(["a", "b"])], "update 0 has dtype <U1; updates are real numbers"),
    ],
)
def test_every_rule_rejects_inconsistent_updates(rule_name: str, updates: list[np.ndarray], message: str) -> None:
    kwargs = dict(RULE_KWARGS[rule_name])
    for key in ("root_update", "root_updates"):
        kwargs.pop(key, None)
    if rule_name == "fltrust":
        kwargs["root_update"] = np.ones(2)
    if rule_name == "fltrust_committee":
        kwargs["root_updates"] = [np.ones(2)]
    with pytest.raises(AggregationError, match=f"^{rule_name}: {message}"):
        aggregate(rule_name, updates, **kwargs)


def test_aggregation_errors_are_validation_errors() -> None:
    assert issubclass(AggregationError, ValidationError)
