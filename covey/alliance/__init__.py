"""Alliance (federated learning on chain): robust aggregation, update hashes, voter scoring, secure aggregation.

    from covey.alliance import aggregate, update_hash, attacks
    candidate = aggregate("covey_default", updates)     # every voter recomputes this...
    update_hash(candidate)                               # ...and checks this 32-byte hash

Aggregators are pure numpy functions `list[update] -> update` returning float64; bad input raises
`AggregationError` (a `covey.errors.ValidationError`).
"""

from __future__ import annotations

from covey.alliance import attacks, secure_agg
from covey.alliance.aggregators import (
    AGGREGATORS,
    DEFAULT_RULE,
    AggregationError,
    aggregate,
    coordinate_median,
    covey_default,
    fedavg,
    fltrust,
    fltrust_committee,
    fltrust_trust_scores,
    krum,
    krum_scores,
    multi_krum,
    multi_krum_selection,
    norm_clip,
    trimmed_mean,
)
from covey.alliance.canonical import decode_update, encode_update, update_hash
from covey.alliance.scoring import accept_mask, distances_to, score_updates

__all__ = [
    "AGGREGATORS",
    "DEFAULT_RULE",
    "AggregationError",
    "accept_mask",
    "aggregate",
    "attacks",
    "coordinate_median",
    "covey_default",
    "decode_update",
    "distances_to",
    "encode_update",
    "fedavg",
    "fltrust",
    "fltrust_committee",
    "fltrust_trust_scores",
    "krum",
    "krum_scores",
    "multi_krum",
    "multi_krum_selection",
    "norm_clip",
    "score_updates",
    "secure_agg",
    "trimmed_mean",
    "update_hash",
]
