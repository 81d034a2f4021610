"""FedAvg (McMahan et al., AISTATS 2017): the weighted mean of the updates. Not robust: one update moves it anywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Vector, as_matrix, sum_rows
from covey.alliance.errors import AggregationError


def fedavg(updates: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> Vector:
    """The mean of `updates` weighted by `weights` (e.g. local example counts; equal if None), as float64.

    Raises `AggregationError` when the updates are inconsistent, or the weights are not one finite,
    non-negative number per update with a positive sum.
    """
    matrix = as_matrix(updates, "fedavg")
    if weights is None:
        return sum_rows(matrix) / matrix.shape[0]
    weight_array = np.asarray(weights, dtype=np.float64)
    if weight_array.shape != (matrix.shape[0],):
        raise AggregationError(f"fedavg: got {weight_array.size} weights for {matrix.shape[0]} updates")
    if not np.isfinite(weight_array).all() or (weight_array < 0).any():
        raise AggregationError(f"fedavg: weights must be finite and non-negative, got {weight_array.tolist()}")
    total_weight = math.fsum(weight_array.tolist())  # exactly rounded, so every voter gets the same bits
    if total_weight <= 0:
        raise AggregationError("fedavg: the weights sum to zero; at least one update needs a positive weight")
    return sum_rows(matrix, weight_array.tolist()) / total_weight
