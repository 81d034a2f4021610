"""FLTrust (Cao et al., NDSS 2021): trust each update by its direction's agreement with a root update.

Trust score = ReLU(cosine(update, root)); each update is rescaled to the root update's norm; the
aggregate is the trust-weighted mean. The root update is one trained on a small clean root set.

Covey has no server to hold that set, so two places fit: the task creator's small public set (one
`root_update` every voter recomputes), or each committee member's own data as its root, combined
by `fltrust_committee` with a stake-weighted median of the trust scores so no minority of stake
can vouch for an update. Measured here: dropping updates longer than 3x the root update
(`max_norm_ratio=3`) before scoring beat plain FLTrust against Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import (
    AggregationError,
    Matrix,
    Vector,
    as_matrix,
    as_vector,
    check_float,
    dot,
    l2_norm,
    sum_rows,
    weighted_median,
)


def fltrust_trust_scores(updates: Sequence[np.ndarray], root_update: np.ndarray) -> Vector:
    """Each update's trust score `max(0, cos(update, root_update))` in [0, 1], in input order, as float64.

    A zero update (no direction) scores 0. Raises `AggregationError` when the updates are
    inconsistent, the root update's length differs, or the root update is zero.
    """
    matrix = as_matrix(updates, "fltrust")
    root, root_norm = _check_root(root_update, matrix.shape[1], "fltrust: root_update")
    return _trust(matrix, root, root_norm)


def fltrust(
    updates: Sequence[np.ndarray],
    root_update: np.ndarray,
    *,
    max_norm_ratio: float | None = None,
) -> Vector:
    """The trust-weighted mean of the updates, each rescaled to the root update's norm, as float64.

    With `max_norm_ratio=k`, updates longer than `k` times the root update get trust 0 before
    averaging. When no update earns any trust the result is the zero vector: the global model
    stays as it is rather than follow updates nobody vouches for. Raises `AggregationError` when
    the updates are inconsistent, the root update is zero or of another length, or `k <= 0`.
    """
    matrix = as_matrix(updates, "fltrust")
    root, root_norm = _check_root(root_update, matrix.shape[1], "fltrust: root_update")
    trust = _trust(matrix, root, root_norm)
    return _combine(matrix, trust, root_norm, max_norm_ratio, "fltrust")


def fltrust_committee(
    updates: Sequence[np.ndarray],
    root_updates: Sequence[np.ndarray],
    stakes: Sequence[float] | None = None,
    *,
    max_norm_ratio: float | None = None,
) -> Vector:
    """FLTrust with one root update per committee member, as float64.

    Each update's trust is the stake-weighted (lower) median over members of its FLTrust score
    against that member's root update; updates are rescaled to the stake-weighted median root
    norm. Every voter must see the same committed root updates to recompute the same result.
    Raises `AggregationError` for inconsistent updates or roots, a zero root, or stakes that are
    not one positive finite number per root update.
    """
    rule = "fltrust_committee"
    matrix = as_matrix(updates, rule)
    roots = as_matrix(root_updates, f"{rule}: root_updates")
    if roots.shape[1] != matrix.shape[1]:
        raise AggregationError(
            f"{rule}: root updates have {roots.shape[1]} coordinates, updates have {matrix.shape[1]}"
        )
    weights = _check_stakes(stakes, roots.shape[0], rule)
    root_norms = [_check_root(root, matrix.shape[1], f"{rule}: root update {k}")[1] for k, root in enumerate(roots)]
    per_member = np.stack([_trust(matrix, root, norm) for root, norm in zip(roots, root_norms, strict=True)])
    trust = np.array([weighted_median(per_member[:, i], weights) for i in range(matrix.shape[0])])
    return _combine(matrix, trust, weighted_median(root_norms, weights), max_norm_ratio, rule)


def _check_root(root_update: object, dim: int, what: str) -> tuple[Vector, float]:
    root = as_vector(root_update, what)
    if root.shape[0] != dim:
        raise AggregationError(f"{what} has {root.shape[0]} coordinates, the updates have {dim}")
    norm = l2_norm(root)
    if norm == 0:
        raise AggregationError(f"{what} is all zeros; FLTrust needs a root update with a direction")
    return root, norm


def _check_stakes(stakes: Sequence[float] | None, n_roots: int, rule: str) -> list[float]:
    if stakes is None:
        return [1.0] * n_roots
    values = np.asarray(stakes, dtype=np.float64)
    if values.shape != (n_roots,):
        raise AggregationError(f"{rule}: got {values.size} stakes for {n_roots} root updates")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise AggregationError(f"{rule}: stakes must be finite and positive, got {values.tolist()}")
    return values.tolist()


def _trust(matrix: Matrix, root: Vector, root_norm: float) -> Vector:
    scores = np.zeros(matrix.shape[0], dtype=np.float64)
    for index, row in enumerate(matrix):
        norm = l2_norm(row)
        if norm > 0:
            # Rounding can push a cosine a hair past 1; clamp so a score stays a fraction.
            scores[index] = min(1.0, max(0.0, dot(row, root) / (norm * root_norm)))
    return scores


def _combine(matrix: Matrix, trust: Vector, root_norm: float, max_norm_ratio: float | None, rule: str) -> Vector:
    norms = [l2_norm(row) for row in matrix]
    trust = trust.copy()
    if max_norm_ratio is not None:
        ratio = check_float(max_norm_ratio, "max_norm_ratio", rule, low=0.0, low_inclusive=False)
        for index, norm in enumerate(norms):
            if norm > ratio * root_norm:
                trust[index] = 0.0
    total_trust = math.fsum(trust.tolist())
    if total_trust == 0:
        return np.zeros(matrix.shape[1], dtype=np.float64)
    coefficients = [
        float(score) * root_norm / norm if score > 0 else 0.0 for score, norm in zip(trust, norms, strict=True)
    ]
    return sum_rows(matrix, coefficients) / total_trust
