"""Per-update scoring for voters: judge each proposer's update on its own, not only the round's aggregate.

A voter that judged only the aggregate would reject a round, and slash every proposer in it, for
one poisoner's update. Here each update is scored against the voter's own data and checked
against the robust aggregate, so a vote (and a slash) lands on the update that earned it.

Voting sits on top of a robust rule, never instead of one. Measured here: a FLock-style committee
that rejects an update only when it lowers a member's local accuracy by more than 5 points
ratchets: an attacker that costs 4.9 points passes every round, and the losses compound. So an
update must also stay near the robust aggregate (`max_distance_ratio`), and the aggregate itself
bounds what any accepted update can do.

The metric check suits IID data only. On non-IID data (Dirichlet 0.1) an honest update trained on
other classes lowers a voter's own accuracy, while a free-rider's zero update never does: measured
on digits with 10 clients, 5-voter committees using `accept_mask` accepted the three free-riders
every round but only 1.3 of the 7 honest updates per round on average, and the model ended 51
points below FedAvg over the honest clients (55 under IPM). `trust_votes` votes what
`covey_trust` keeps instead, so a vote never depends on how alike the voter's data and the
proposer's are, and an honest proposer whose update the rule averages is never voted down (nor
slashed) for somebody else's poison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from covey.alliance.aggregators._base import (
    AggregationError,
    as_matrix,
    as_vector,
    check_float,
    l2_norm,
    median,
)
from covey.alliance.aggregators.trust import DEFAULT_MAX_NORM_RATIO as TRUST_MAX_NORM_RATIO
from covey.alliance.aggregators.trust import DEFAULT_MIN_COSINE, trust_mask

DEFAULT_MIN_SCORE_DELTA = -0.02
DEFAULT_MAX_DISTANCE_RATIO = 3.0


def score_updates(
    global_vec: np.ndarray,
    updates: Sequence[np.ndarray],
    evaluate: Callable[[np.ndarray], float],
) -> list[float]:
    """Each update's effect on the voter's metric: `evaluate(global + update) - evaluate(global)`, in input order.

    `evaluate` maps flat model parameters to a higher-is-better metric on the voter's own data
    (accuracy in [0, 1], say) and is called `len(updates) + 1` times. Raises `AggregationError`
    when the vectors are inconsistent or `evaluate` returns a non-finite value.
    """
    global_params = as_vector(global_vec, "score_updates: global_vec")
    matrix = as_matrix(updates, "score_updates")
    if matrix.shape[1] != global_params.shape[0]:
        raise AggregationError(
            f"score_updates: updates have {matrix.shape[1]} coordinates, global_vec has {global_params.shape[0]}"
        )
    baseline = _finite_metric(evaluate(global_params.copy()), "the global model")
    return [
        _finite_metric(evaluate(global_params + row), f"update {index}") - baseline for index, row in enumerate(matrix)
    ]


def distances_to(updates: Sequence[np.ndarray], reference: np.ndarray) -> list[float]:
    """Each update's Euclidean distance to `reference` (e.g. the robust aggregate), in input order."""
    matrix = as_matrix(updates, "distances_to")
    target = as_vector(reference, "distances_to: reference")
    if target.shape[0] != matrix.shape[1]:
        raise AggregationError(
            f"distances_to: reference has {target.shape[0]} coordinates, updates have {matrix.shape[1]}"
        )
    return [l2_norm(row - target) for row in matrix]


def accept_mask(
    score_deltas: Sequence[float],
    updates: Sequence[np.ndarray],
    robust_aggregate: np.ndarray,
    *,
    min_score_delta: float = DEFAULT_MIN_SCORE_DELTA,
    max_distance_ratio: float = DEFAULT_MAX_DISTANCE_RATIO,
) -> list[bool]:
    """Per update, whether this voter accepts it: True when both of its own checks pass.

    - metric: its score delta (from `score_updates`) is at least `min_score_delta` (-0.02: it may
      cost at most 2 accuracy points on this voter's data; set 0 or above to demand a gain);
    - distance: it is at most `max_distance_ratio` times the median distance of all updates
      to `robust_aggregate`. While most updates are honest that median is an honest distance,
      so one poisoner cannot move the bar for the others.
    Raises `AggregationError` for mismatched lengths or out-of-range parameters.
    """
    distances = distances_to(updates, robust_aggregate)
    if len(score_deltas) != len(distances):
        raise AggregationError(f"accept_mask: got {len(score_deltas)} score deltas for {len(distances)} updates")
    deltas = [_finite_metric(delta, f"score delta {index}") for index, delta in enumerate(score_deltas)]
    floor = check_float(min_score_delta, "min_score_delta", "accept_mask", low=-math.inf)
    ratio = check_float(max_distance_ratio, "max_distance_ratio", "accept_mask", low=1.0)
    distance_bar = ratio * median(distances)
    return [delta >= floor and distance <= distance_bar for delta, distance in zip(deltas, distances, strict=True)]


def trust_votes(
    updates: Sequence[np.ndarray],
    reference: np.ndarray | None = None,
    *,
    min_cosine: float = DEFAULT_MIN_COSINE,
    max_norm_ratio: float = TRUST_MAX_NORM_RATIO,
) -> list[bool]:
    """Per update, this voter's vote when the alliance aggregates with `covey_trust`: exactly what the rule keeps.

    `reference` is the round's `covey.alliance.rules.trust_reference` (the last global step that
    moved the model). A vote uses public data only (the committed updates and the replayed
    models), so every honest voter casts the same mask and a proposer is voted down only for its
    own update: zero, a copy of an earlier one, pointing against training (cosine at most
    `min_cosine`), or longer than `max_norm_ratio` times the median of those pointing with it.
    Raises `AggregationError` as `covey_trust` does.
    """
    return trust_mask(updates, reference, min_cosine=min_cosine, max_norm_ratio=max_norm_ratio)


def _finite_metric(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AggregationError(f"scoring: the metric for {what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise AggregationError(f"scoring: the metric for {what} is {number}; a metric must be finite")
    return number
