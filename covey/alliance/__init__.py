"""Alliance (federated learning on chain): robust aggregation, update hashes, voter scoring, secure aggregation.

    from covey.alliance import aggregate, update_hash, attacks
    candidate = aggregate("covey_default", updates)     # every voter recomputes this...
    update_hash(candidate)                               # ...and checks this 32-byte hash

Aggregators are pure numpy functions `list[update] -> update` returning float64; bad input raises
`AggregationError` (a `covey.errors.ValidationError`).

On chain (imported on first use, so the numpy layer stays light):

    client = AllianceClient(chain, address)              # the Alliance contract, typed
    run, _ = run_in_process(chain, client, staking, store, RunConfig(), funder)
    Participant(account, client, store, alliance_id, private_data, spec).act()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from covey.alliance.errors import FlowerError
from covey.alliance.scoring import accept_mask, distances_to, score_updates

if TYPE_CHECKING:
    from covey.alliance.client import AllianceClient, AllianceParams, Phase
    from covey.alliance.ledger import ModelLedger
    from covey.alliance.participant import Behaviour, Participant
    from covey.alliance.privacy import DPConfig
    from covey.alliance.rules import RULE_NAMES, aggregate_by_rule, next_model
    from covey.alliance.runner import AllianceRun, RunConfig, run_in_process, run_processes
    from covey.alliance.spec import AllianceSpec

# The chain-facing API pulls in web3 and torch: import each on first use.
_LAZY: dict[str, str] = {
    "AllianceClient": "covey.alliance.client",
    "AllianceParams": "covey.alliance.client",
    "Phase": "covey.alliance.client",
    "ModelLedger": "covey.alliance.ledger",
    "Behaviour": "covey.alliance.participant",
    "Participant": "covey.alliance.participant",
    "DPConfig": "covey.alliance.privacy",
    "RULE_NAMES": "covey.alliance.rules",
    "aggregate_by_rule": "covey.alliance.rules",
    "next_model": "covey.alliance.rules",
    "AllianceRun": "covey.alliance.runner",
    "RunConfig": "covey.alliance.runner",
    "run_in_process": "covey.alliance.runner",
    "run_processes": "covey.alliance.runner",
    "AllianceSpec": "covey.alliance.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'covey.alliance' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AGGREGATORS",
    "DEFAULT_RULE",
    "RULE_NAMES",
    "AggregationError",
    "AllianceClient",
    "AllianceParams",
    "AllianceRun",
    "AllianceSpec",
    "Behaviour",
    "DPConfig",
    "FlowerError",
    "ModelLedger",
    "Participant",
    "Phase",
    "RunConfig",
    "accept_mask",
    "aggregate",
    "aggregate_by_rule",
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
    "next_model",
    "norm_clip",
    "run_in_process",
    "run_processes",
    "score_updates",
    "secure_agg",
    "trimmed_mean",
    "update_hash",
]
