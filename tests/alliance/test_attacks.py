"""Each poisoning attack produces the update its paper describes, from honest updates worked out by hand."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from covey.alliance import AggregationError, attacks

HONEST = [np.array([1.0, 2.0]), np.array([3.0, 2.0]), np.array([5.0, 8.0])]


def test_sign_flip_reverses_and_scales() -> None:
    np.testing.assert_array_equal(attacks.sign_flip(np.array([1.0, -2.0])), [-1.0, 2.0])
    np.testing.assert_array_equal(attacks.sign_flip(np.array([1.0, -2.0]), scale=3.0), [-3.0, 6.0])
    with pytest.raises(AggregationError, match="scale"):
        attacks.sign_flip(np.array([1.0]), scale=0.0)


def test_gaussian_noise_replays_from_its_seed() -> None:
    update = np.zeros(4000)
    noisy = attacks.gaussian_noise(update, seed=11, sigma=2.0)
    np.testing.assert_array_equal(noisy, attacks.gaussian_noise(update, seed=11, sigma=2.0))
    assert not np.array_equal(noisy, attacks.gaussian_noise(update, seed=12, sigma=2.0))
    assert abs(float(noisy.std()) - 2.0) < 0.1
    np.testing.assert_array_equal(attacks.gaussian_noise(np.array([1.0, 2.0]), seed=0, sigma=0.0), [1.0, 2.0])
    with pytest.raises(AggregationError, match="sigma"):
        attacks.gaussian_noise(update, seed=0, sigma=-1.0)


def test_scaled_multiplies() -> None:
    np.testing.assert_array_equal(attacks.scaled(np.array([1.0, -2.0]), 10.0), [10.0, -20.0])


def test_alie_z_follows_the_papers_formula() -> None:
    # n = 5, f = 2: s = floor(5/2 + 1) - 2 = 1 supporter needed; z = Phi^-1(4/5).
    assert attacks.alie_z(5, 2) == pytest.approx(NormalDist().inv_cdf(0.8))
    # n = 50, f = 12: s = 26 - 12 = 14; z = Phi^-1(36/50) ~ 0.583.
    assert attacks.alie_z(50, 12) == pytest.approx(0.5828415, abs=1e-6)
    with pytest.raises(AggregationError, match="n_attackers must be between 1 and 2, got 3"):
        attacks.alie_z(5, 3)


def test_alie_sits_z_sample_stds_below_the_honest_mean() -> None:
    # Mean [3, 4]; sample std [2, sqrt((4 + 4 + 16) / 2)] = [2, sqrt(12)]; 2 attackers -> n = 5.
    z = NormalDist().inv_cdf(0.8)
    np.testing.assert_allclose(attacks.alie(HONEST, n_attackers=2), [3 - 2 * z, 4 - np.sqrt(12) * z])
    np.testing.assert_allclose(attacks.alie(HONEST, n_attackers=2, z=1.0), [1.0, 4 - np.sqrt(12)])
    with pytest.raises(AggregationError, match="at least 2 honest updates"):
        attacks.alie(HONEST[:1], n_attackers=1)


def test_ipm_is_minus_epsilon_times_the_honest_mean() -> None:
    np.testing.assert_allclose(attacks.ipm(HONEST, epsilon=0.5), [-1.5, -2.0])
    with pytest.raises(AggregationError, match="epsilon"):
        attacks.ipm(HONEST, epsilon=0.0)


def test_free_rider_sends_a_zero_delta() -> None:
    np.testing.assert_array_equal(attacks.free_rider(np.array([1.0, 2.0, 3.0])), [0.0, 0.0, 0.0])


def test_label_flip_mirrors_the_classes() -> None:
    flipped = attacks.label_flip(np.array([0, 1, 2, 9], dtype=np.int64), n_classes=10)
    np.testing.assert_array_equal(flipped, [9, 8, 7, 0])
    assert flipped.dtype == np.int64
    np.testing.assert_array_equal(attacks.label_flip(np.array([0, 1, 1], dtype=np.uint8), 2), [1, 0, 0])
    with pytest.raises(AggregationError, match=r"labels must be in \[0, 10\), got values from 0 to 10"):
        attacks.label_flip(np.array([0, 10]), n_classes=10)
    with pytest.raises(AggregationError, match="labels must be integers"):
        attacks.label_flip(np.array([0.0, 1.0]), n_classes=2)
