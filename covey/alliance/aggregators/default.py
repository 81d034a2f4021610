"""Covey's default rule: clip every update to the median update norm, then take the coordinate-wise trimmed mean.

Why this pair:
- the median norm is an honest norm while fewer than half the updates lie, so clipping needs no
  tuned bound and no trusted root set; scaled and noise updates shrink to a typical honest length;
- the trimmed mean then drops the `n_byzantine` most extreme values of every coordinate, so sign
  flipping, IPM, free-riders and noise lose their pull; clipping first bounds the damage when more
  attackers come than the trim budget expects (each extra one moves a coordinate by at most
  median_norm / (n - 2 * n_trim));
- it costs O(n d log n) against Multi-Krum's O(n^2 d), has no `n > 2f + 2` floor that small
  committees fail, and is deterministic (stable sorts, row-order sums).
ALIE stays a known weakness of every per-coordinate or distance rule: its shift stays within the
honest spread, so per-update scoring by voters (`covey.alliance.scoring`) sits on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covey.alliance.aggregators._base import Vector, as_matrix, check_int, count_of, l2_norm, median
from covey.alliance.aggregators.norm_clip import clip_rows
from covey.alliance.aggregators.trimmed_mean import trimmed_mean_of

DEFAULT_BYZANTINE_FRACTION = 0.3


def covey_default(updates: Sequence[np.ndarray], *, n_byzantine: int | None = None) -> Vector:
    """The trimmed mean (`n_byzantine` cut at each end) of the updates clipped to their median norm, as float64.

    `n_byzantine` defaults to `ceil(0.3 * n)`, capped at `(n - 1) // 2` so at least one value per
    coordinate remains (three updates give their clipped median). Raises `AggregationError` when
    the updates are inconsistent or `n_byzantine` is outside `[0, (n - 1) // 2]`.
    """
    matrix = as_matrix(updates, "covey_default")
    n_updates = matrix.shape[0]
    most = (n_updates - 1) // 2
    if n_byzantine is None:
        n_trim = min(count_of(DEFAULT_BYZANTINE_FRACTION, n_updates, round_up=True), most)
    else:
        n_trim = check_int(n_byzantine, "n_byzantine", "covey_default", low=0, high=most)
    clip_bound = median([l2_norm(row) for row in matrix])
    return trimmed_mean_of(clip_rows(matrix, clip_bound), n_trim)
