"""Coordinate-wise trimmed mean (Yin et al., ICML 2018): per coordinate, drop the extremes and average the rest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Matrix, Vector, as_matrix, check_float, count_of, sum_rows


def trimmed_mean(updates: Sequence[np.ndarray], trim_ratio: float) -> Vector:
    """Per coordinate, the mean without the `floor(trim_ratio * n)` lowest and highest values, as float64.

    `trim_ratio` is in [0, 0.5): 0 is the plain mean; near 0.5 it approaches the median. It
    tolerates up to `floor(trim_ratio * n)` arbitrary updates. Raises `AggregationError` when the
    updates are inconsistent or `trim_ratio` is out of range.
    """
    matrix = as_matrix(updates, "trimmed_mean")
    ratio = check_float(trim_ratio, "trim_ratio", "trimmed_mean", low=0.0, high=0.5, high_inclusive=False)
    return trimmed_mean_of(matrix, count_of(ratio, matrix.shape[0], round_up=False))


def trimmed_mean_of(matrix: Matrix, n_trim: int) -> Vector:
    """The coordinate-wise mean of a checked matrix after dropping `n_trim` values at each end (`2 * n_trim < n`)."""
    ordered = np.sort(matrix, axis=0, kind="stable")
    kept = ordered[n_trim : ordered.shape[0] - n_trim]
    return sum_rows(kept) / kept.shape[0]
