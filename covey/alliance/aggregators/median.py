"""Coordinate-wise median (Yin et al., ICML 2018): per coordinate, the middle value of the updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Vector, as_matrix


def coordinate_median(updates: Sequence[np.ndarray]) -> Vector:
    """Per coordinate, the median of the updates (the mean of the two middle values for an even count), as float64.

    Tolerates fewer than half the updates being arbitrary. Raises `AggregationError` when the
    updates are inconsistent.
    """
    ordered = np.sort(as_matrix(updates, "coordinate_median"), axis=0, kind="stable")
    middle = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        return ordered[middle].copy()
    return (ordered[middle - 1] + ordered[middle]) / 2
