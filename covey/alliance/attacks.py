"""Poisoning attacks for tests and benchmarks: pure functions that turn honest updates (or labels) into malicious ones.

Model-level attacks return float64 updates; the collusions (`alie`, `ipm`) return the one vector
every attacker sends. Randomised attacks take an explicit seed, so a benchmark replays exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from covey.alliance.aggregators._base import (
    AggregationError,
    Vector,
    as_matrix,
    as_vector,
    check_float,
    check_int,
    sum_rows,
)


def sign_flip(update: np.ndarray, scale: float = 1.0) -> Vector:
    """The update reversed and multiplied by `scale` (> 0): `-scale * update`.

    Sign flipping as in Li et al., "RSA: Byzantine-robust stochastic aggregation methods for
    distributed learning from heterogeneous datasets" (AAAI 2019): the attacker pushes the model
    up the loss instead of down.
    """
    factor = check_float(scale, "scale", "sign_flip", low=0.0, low_inclusive=False)
    return -factor * as_vector(update, "sign_flip: update")


def gaussian_noise(update: np.ndarray, seed: int, sigma: float) -> Vector:
    """The update plus independent N(0, sigma^2) noise per coordinate, drawn from PCG64 seeded with `seed`.

    With `sigma` far above the update's scale this is the "Gaussian Byzantine" worker of Blanchard
    et al., "Machine learning with adversaries: Byzantine tolerant gradient descent" (NeurIPS
    2017); `gaussian_noise(free_rider(u), seed, sigma)` sends pure noise.
    """
    vector = as_vector(update, "gaussian_noise: update")
    spread = check_float(sigma, "sigma", "gaussian_noise", low=0.0)
    seed_value = check_int(seed, "seed", "gaussian_noise", low=0)
    return vector + np.random.Generator(np.random.PCG64(seed_value)).normal(0.0, spread, size=vector.shape[0])


def scaled(update: np.ndarray, factor: float) -> Vector:
    """The update multiplied by `factor`: `factor * update`.

    Boosting as in Bhagoji et al., "Analyzing federated learning through an adversarial lens"
    (ICML 2019) and model replacement in Bagdasaryan et al., "How to backdoor federated learning"
    (AISTATS 2020): a large factor lets one update outvote the rest of a mean.
    """
    return check_float(factor, "factor", "scaled", low=-math.inf) * as_vector(update, "scaled: update")


def alie_z(n_workers: int, n_attackers: int) -> float:
    """The ALIE shift in standard deviations: `z = Phi^-1((n - s) / n)` with `s = floor(n / 2 + 1) - f`.

    `s` is how many honest workers the attackers need on their side for a majority; `z` is the
    largest shift that still leaves that many honest values farther from the mean than the attack.
    Needs `1 <= n_attackers <= n_workers // 2`.
    """
    workers = check_int(n_workers, "n_workers", "alie", low=2)
    attackers = check_int(n_attackers, "n_attackers", "alie", low=1, high=workers // 2)
    supporters = workers // 2 + 1 - attackers
    return NormalDist().inv_cdf((workers - supporters) / workers)


def alie(honest_updates: Sequence[np.ndarray], n_attackers: int, *, z: float | None = None) -> Vector:
    """The "a little is enough" update: per coordinate, `mean - z * std` of the honest updates.

    Baruch, Baruch and Goldberg, "A little is enough: circumventing defenses for distributed
    learning" (NeurIPS 2019). `z` defaults to `alie_z(n_honest + n_attackers, n_attackers)`; the
    std is the sample std (ddof=1), as in the authors' code. Every attacker sends this same
    vector: it stays inside the honest spread, so median, trimmed mean and Krum keep it. Needs at
    least two honest updates.
    """
    honest = as_matrix(honest_updates, "alie")
    if honest.shape[0] < 2:
        raise AggregationError("alie: needs at least 2 honest updates to estimate their spread")
    attackers = check_int(n_attackers, "n_attackers", "alie", low=1)
    shift = alie_z(honest.shape[0] + attackers, attackers) if z is None else check_float(z, "z", "alie", low=-math.inf)
    mean = sum_rows(honest) / honest.shape[0]
    std = np.sqrt(sum_rows((honest - mean) ** 2) / (honest.shape[0] - 1))
    return mean - shift * std


def ipm(honest_updates: Sequence[np.ndarray], epsilon: float) -> Vector:
    """The inner-product-manipulation update: `-epsilon * mean(honest_updates)`.

    Xie, Koyejo and Gupta, "Fall of empires: breaking Byzantine-tolerant SGD by inner product
    manipulation" (UAI 2019). Small `epsilon` (0.1-0.5) hides near the honest cluster yet can make
    the aggregate's inner product with the true gradient negative; large `epsilon` reverses a mean.
    """
    honest = as_matrix(honest_updates, "ipm")
    factor = check_float(epsilon, "epsilon", "ipm", low=0.0, low_inclusive=False)
    return -factor * (sum_rows(honest) / honest.shape[0])


def free_rider(update: np.ndarray) -> Vector:
    """A zero update of the same length: the free-rider returns the global model unchanged and claims a reward.

    Fraboni, Vidal and Lorenzi, "Free-rider attacks on model aggregation in federated learning"
    (AISTATS 2021); Lin, Du and Liu, "Free-riders in federated learning: attacks and defenses"
    (arXiv:1911.12560, 2019).
    """
    return np.zeros_like(as_vector(update, "free_rider: update"))


def label_flip(labels: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.integer]:
    """The labels mapped `l -> n_classes - 1 - l` (a copy, same dtype): what a data poisoner trains on.

    As in Fang et al., "Local model poisoning attacks to Byzantine-robust federated learning"
    (USENIX Security 2020) and Tolpegin et al., "Data poisoning attacks against federated learning
    systems" (ESORICS 2020). Raises `AggregationError` for non-integer labels or labels outside
    `[0, n_classes)`.
    """
    classes = check_int(n_classes, "n_classes", "label_flip", low=2)
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise AggregationError(f"label_flip: labels must be integers, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= classes):
        raise AggregationError(
            f"label_flip: labels must be in [0, {classes}), got values from {int(array.min())} to {int(array.max())}"
        )
    return (classes - 1 - array).astype(array.dtype)
