"""The aggregation rules an alliance can name on chain (a `uint8` id), each a function of the updates alone.

Every participant recomputes the round's aggregate from the same committed updates, so a rule's
parameters must follow from the updates themselves: the Byzantine budget is `ceil(0.3 * n)` capped
at what the rule can tolerate for that `n`. FLTrust is not here: its root update comes from training,
which is not bit-for-bit reproducible across machines, so voters could not agree on its hash.
`covey_trust` (`covey.alliance.aggregators.trust`) takes its reference direction from public history
instead: `trust_reference` below, the last global step that moved the model, which every participant
replays bit for bit, so the ledger and the voters pass it as `reference=`; no other rule takes one.

    id  rule               with n updates
    0   covey_default      clip to the median norm, trim ceil(0.3 n) per side (capped at (n-1)//2)
    1   fedavg             the mean
    2   coordinate_median  the coordinate-wise median
    3   trimmed_mean       trim ratio 0.2
    4   krum               f = min(ceil(0.3 n), (n - 3) // 2); the mean below 3 updates
    5   multi_krum         the same f, m = n - f; the mean below 3 updates
    6   covey_trust        the mean of the updates `trust_mask` keeps against `trust_reference`
                           (the round's own covey_default aggregate before any step moved the model)

covey_trust needs 3 or more proposers a round (`min_proposers`): with 2, the covey_default aggregate
it compares to is the mean of two clipped updates, which a sign-flipped one turns its way, so the rule
keeps the flip and drops the honest update (measured on breast cancer with the demo's 2 proposers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from covey.alliance.aggregators import (
    DEFAULT_BYZANTINE_FRACTION,
    AggregationError,
    coordinate_median,
    covey_default,
    covey_trust,
    fedavg,
    krum,
    multi_krum,
    trimmed_mean,
)
from covey.alliance.aggregators._base import Vector, as_vector, check_int, l2_norm

RULE_NAMES: tuple[str, ...] = (
    "covey_default",
    "fedavg",
    "coordinate_median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "covey_trust",
)
TRIMMED_MEAN_RATIO = 0.2
KRUM_MIN_UPDATES = 3
TRUST_MIN_PROPOSERS = 3


def rule_id(name: str) -> int:
    """The on-chain id of the rule called `name`; `AggregationError` lists the choices for an unknown one."""
    if name not in RULE_NAMES:
        raise AggregationError(f"unknown alliance rule {name!r}; choose one of {', '.join(RULE_NAMES)}")
    return RULE_NAMES.index(name)


def rule_name(rule: int) -> str:
    """The name of on-chain rule id `rule`."""
    if not 0 <= rule < len(RULE_NAMES):
        raise AggregationError(f"unknown alliance rule id {rule}; ids run from 0 to {len(RULE_NAMES) - 1}")
    return RULE_NAMES[rule]


def aggregate_by_rule(rule: int, updates: Sequence[np.ndarray], reference: np.ndarray | None = None) -> Vector:
    """The aggregate of `updates` under on-chain rule id `rule`, as float64 (deterministic, see the table above).

    `reference` is the round's `trust_reference` for `covey_trust` (None in the first round); the
    other rules are functions of the updates alone and ignore it.
    """
    name = rule_name(rule)
    n_updates = len(updates)
    if name == "covey_trust":
        return covey_trust(updates, reference)
    if name == "covey_default":
        return covey_default(updates)
    if name == "fedavg":
        return fedavg(updates)
    if name == "coordinate_median":
        return coordinate_median(updates)
    if name == "trimmed_mean":
        return trimmed_mean(updates, TRIMMED_MEAN_RATIO)
    if n_updates < KRUM_MIN_UPDATES:
        return fedavg(updates)
    n_byzantine = min(math.ceil(round(DEFAULT_BYZANTINE_FRACTION * n_updates, 9)), (n_updates - 3) // 2)
    if name == "krum":
        return krum(updates, n_byzantine)
    return multi_krum(updates, n_byzantine, n_updates - n_byzantine)


def next_model(
    base: np.ndarray, accepted_updates: Sequence[np.ndarray], rule: int, reference: np.ndarray | None = None
) -> Vector:
    """The global model after a round: `base + aggregate(accepted)`, or `base` when nothing was accepted (float64).

    `reference` goes to `aggregate_by_rule`: the round's `trust_reference` for `covey_trust`, else None.
    """
    model = as_vector(base, "next_model: base")
    if not accepted_updates:
        return model
    step = aggregate_by_rule(rule, accepted_updates, reference)
    if step.shape != model.shape:
        raise AggregationError(f"next_model: updates have {step.shape[0]} coordinates, the model {model.shape[0]}")
    return model + step


def min_proposers(rule: int) -> int:
    """The fewest proposers a round of an alliance with on-chain rule id `rule` should draw to resist one poisoner."""
    return TRUST_MIN_PROPOSERS if needs_reference(rule) else 1


def needs_reference(rule: int) -> bool:
    """Whether on-chain rule id `rule` aggregates against `trust_reference` (only `covey_trust` does)."""
    return rule_name(rule) == "covey_trust"


def trust_reference(model_for_round: Callable[[int], np.ndarray], round_number: int) -> Vector | None:
    """The direction `covey_trust` compares round `round_number`'s updates to, or None before any step moved.

    It is the last global step that moved the model: `model(r) - model(r - 1)` for the latest
    `r <= round_number` where the two differ. A round that accepted nothing, or whose updates the
    rule all dropped, is skipped, so one captured or empty round cannot blank the reference.
    `model_for_round` maps a round (from 1) to the model it started from, e.g.
    `ModelLedger.model_for_round`; every participant replays those bit for bit, so every voter
    gets the same reference.
    """
    current = check_int(round_number, "round_number", "trust_reference", low=1)
    later = as_vector(model_for_round(current), f"trust_reference: model of round {current}")
    for earlier_round in range(current - 1, 0, -1):
        earlier = as_vector(model_for_round(earlier_round), f"trust_reference: model of round {earlier_round}")
        step = later - earlier
        if l2_norm(step) > 0:
            return step
        later = earlier
    return None
