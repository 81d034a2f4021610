"""Norm clipping (Sun et al., "Can you really backdoor federated learning?", 2019): shorten long updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Matrix, Vector, as_matrix, check_float, l2_norm


def norm_clip(updates: Sequence[np.ndarray], max_norm: float) -> list[Vector]:
    """Each update scaled to L2 norm `max_norm` if longer, else unchanged, as float64 copies in input order.

    A transform, not an aggregate: compose it with a rule (`fedavg(norm_clip(...))`). Clipping
    bounds how far any one update can move the mean; it keeps the direction. Raises
    `AggregationError` when the updates are inconsistent or `max_norm` is not positive.
    """
    matrix = as_matrix(updates, "norm_clip")
    bound = check_float(max_norm, "max_norm", "norm_clip", low=0.0, low_inclusive=False)
    return list(clip_rows(matrix, bound))


def clip_rows(matrix: Matrix, max_norm: float) -> Matrix:
    """A copy of a checked matrix with every row longer than `max_norm` (>= 0) scaled to exactly that norm."""
    clipped = matrix.copy()
    for index, row in enumerate(matrix):
        norm = l2_norm(row)
        if norm > max_norm:
            clipped[index] = row * (max_norm / norm)
    return clipped
