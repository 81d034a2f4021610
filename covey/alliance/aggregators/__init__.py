"""Robust aggregation rules as pure numpy functions `list[update] -> update`, and a registry by name.

Updates are 1-D real vectors (flattened model deltas). Every rule returns float64, whatever the
input dtype, and is deterministic (stable sorts, row-order sums, no BLAS, no randomness), so every
voter recomputes the same candidate bit for bit. Inconsistent input raises `AggregationError`.
`norm_clip` returns clipped updates, not an aggregate, so it is not in the registry; nor is
`covey_trust`, whose reference direction comes from the alliance's history (see its module).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from covey.alliance.aggregators._base import Vector
from covey.alliance.aggregators.default import DEFAULT_BYZANTINE_FRACTION, covey_default
from covey.alliance.aggregators.fedavg import fedavg
from covey.alliance.aggregators.fltrust import fltrust, fltrust_committee, fltrust_trust_scores
from covey.alliance.aggregators.krum import krum, krum_scores, multi_krum, multi_krum_selection
from covey.alliance.aggregators.median import coordinate_median
from covey.alliance.aggregators.norm_clip import norm_clip
from covey.alliance.aggregators.trimmed_mean import trimmed_mean
from covey.alliance.aggregators.trust import covey_trust, trust_cosines, trust_mask
from covey.alliance.errors import AggregationError

__all__ = [
    "AGGREGATORS",
    "DEFAULT_BYZANTINE_FRACTION",
    "DEFAULT_RULE",
    "AggregationError",
    "aggregate",
    "coordinate_median",
    "covey_default",
    "covey_trust",
    "fedavg",
    "fltrust",
    "fltrust_committee",
    "fltrust_trust_scores",
    "krum",
    "krum_scores",
    "multi_krum",
    "multi_krum_selection",
    "norm_clip",
    "trimmed_mean",
    "trust_cosines",
    "trust_mask",
]

DEFAULT_RULE = "covey_default"

AGGREGATORS: Mapping[str, Callable[..., Vector]] = MappingProxyType(
    {
        "fedavg": fedavg,
        "coordinate_median": coordinate_median,
        "trimmed_mean": trimmed_mean,
        "krum": krum,
        "multi_krum": multi_krum,
        "fltrust": fltrust,
        "fltrust_committee": fltrust_committee,
        "covey_default": covey_default,
    }
)


def aggregate(rule_name: str, updates: Sequence[np.ndarray], **kwargs: Any) -> Vector:
    """The aggregate of `updates` under the rule called `rule_name`, with its parameters as keywords, as float64.

    Raises `AggregationError` for an unknown rule, a missing or unknown parameter, or whatever the
    rule itself rejects.
    """
    rule = AGGREGATORS.get(rule_name)
    if rule is None:
        raise AggregationError(f"unknown aggregation rule {rule_name!r}; known rules: {', '.join(sorted(AGGREGATORS))}")
    try:
        inspect.signature(rule).bind(updates, **kwargs)
    except TypeError as error:
        raise AggregationError(f"{rule_name}: {error}") from None
    return rule(updates, **kwargs)
