"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017): pick the updates closest to their nearest neighbours.

Each update's score is the sum of squared distances to its `n - f - 2` nearest other updates; with
`n > 2f + 2`, an update surrounded by honest ones scores lower than any outlier. Krum returns the
best-scoring update; Multi-Krum averages the `m` best (scores computed once, as in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Matrix, Vector, as_matrix, check_int, sum_rows
from covey.alliance.errors import AggregationError


def krum_scores(updates: Sequence[np.ndarray], n_byzantine: int) -> Vector:
    """Each update's Krum score (lower is more central), in input order, as float64.

    Raises `AggregationError` when the updates are inconsistent or `n > 2 * n_byzantine + 2` fails.
    """
    matrix = as_matrix(updates, "krum")
    return _scores(matrix, _check_byzantine(matrix, n_byzantine, "krum"))


def krum(updates: Sequence[np.ndarray], n_byzantine: int) -> Vector:
    """The update with the lowest Krum score (the lowest index on a tie), as a float64 copy.

    Tolerates up to `n_byzantine` arbitrary updates when `n > 2 * n_byzantine + 2`; raises
    `AggregationError` when that fails or the updates are inconsistent.
    """
    matrix = as_matrix(updates, "krum")
    scores = _scores(matrix, _check_byzantine(matrix, n_byzantine, "krum"))
    return matrix[int(np.argmin(scores))].copy()


def multi_krum_selection(updates: Sequence[np.ndarray], n_byzantine: int, m: int) -> list[int]:
    """The indices of the `m` updates with the lowest Krum scores, ascending (ties go to the lower index)."""
    matrix = as_matrix(updates, "multi_krum")
    return _select(matrix, n_byzantine, m)


def multi_krum(updates: Sequence[np.ndarray], n_byzantine: int, m: int) -> Vector:
    """The mean of the `m` updates with the lowest Krum scores, as float64.

    `m` is in `[1, n - n_byzantine]`: `m = 1` is Krum, `m = n - n_byzantine` (the usual choice)
    averages every update Krum cannot rule out. Raises `AggregationError` when `n > 2 * n_byzantine + 2`
    fails, `m` is out of range, or the updates are inconsistent.
    """
    matrix = as_matrix(updates, "multi_krum")
    return sum_rows(matrix[_select(matrix, n_byzantine, m)]) / m


def _select(matrix: Matrix, n_byzantine: int, m: int) -> list[int]:
    byzantine = _check_byzantine(matrix, n_byzantine, "multi_krum")
    count = check_int(m, "m", "multi_krum", low=1, high=matrix.shape[0] - byzantine)
    order = np.argsort(_scores(matrix, byzantine), kind="stable")
    return sorted(int(index) for index in order[:count])


def _check_byzantine(matrix: Matrix, n_byzantine: int, rule: str) -> int:
    byzantine = check_int(n_byzantine, "n_byzantine", rule, low=0)
    n_updates = matrix.shape[0]
    if n_updates <= 2 * byzantine + 2:
        raise AggregationError(
            f"{rule} needs n > 2 * n_byzantine + 2 updates: got n={n_updates} with n_byzantine={byzantine}"
            f" (needs n >= {2 * byzantine + 3})"
        )
    return byzantine


def _scores(matrix: Matrix, n_byzantine: int) -> Vector:
    n_updates = matrix.shape[0]
    squared = np.zeros((n_updates, n_updates), dtype=np.float64)
    # One difference vector at a time keeps memory at one update, not n of them; d(i, j) and
    # d(j, i) are the same bits because (a - b)^2 == (b - a)^2 exactly.
    for i in range(n_updates):
        for j in range(i + 1, n_updates):
            difference = matrix[i] - matrix[j]
            squared[i, j] = squared[j, i] = float(np.sum(difference * difference))
    n_neighbours = n_updates - n_byzantine - 2
    scores = np.empty(n_updates, dtype=np.float64)
    for i in range(n_updates):
        others = np.delete(squared[i], i)
        nearest = np.sort(others, kind="stable")[:n_neighbours]
        scores[i] = math.fsum(nearest.tolist())
    return scores
