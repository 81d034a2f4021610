"""What every member recomputes off chain: the rule an id names, the next global model, the spec's bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from covey.alliance import AggregationError, aggregate
from covey.alliance.canonical import decode_update
from covey.alliance.rules import RULE_NAMES, aggregate_by_rule, next_model, rule_id, rule_name
from covey.alliance.spec import AllianceSpec
from covey.errors import ValidationError


def test_rule_ids_follow_the_contracts_numbering() -> None:
    assert RULE_NAMES[0] == "covey_default"
    assert [rule_id(name) for name in RULE_NAMES] == list(range(6))
    assert rule_name(4) == "krum"
    with pytest.raises(AggregationError, match="unknown alliance rule"):
        rule_id("fltrust")  # needs a root update training cannot reproduce bit for bit
    with pytest.raises(AggregationError):
        rule_name(6)


def test_each_rule_is_a_function_of_the_updates_alone() -> None:
    updates = [np.array([1.0, 2.0]), np.array([1.2, 1.8]), np.array([0.8, 2.2]), np.array([9.0, -9.0])]
    assert np.array_equal(aggregate_by_rule(rule_id("fedavg"), updates), aggregate("fedavg", updates))
    assert np.array_equal(aggregate_by_rule(rule_id("coordinate_median"), updates), [1.1, 1.9])
    # Krum with four updates tolerates f = min(ceil(1.2), (4 - 3) // 2) = 0 attackers and picks the most central.
    assert np.array_equal(aggregate_by_rule(rule_id("krum"), updates), updates[0])
    # Below three updates Krum is undefined, so the rule is their mean.
    assert np.array_equal(aggregate_by_rule(rule_id("multi_krum"), updates[:2]), [1.1, 1.9])
    for rule in range(len(RULE_NAMES)):
        first = aggregate_by_rule(rule, updates)
        assert first.tobytes() == aggregate_by_rule(rule, [u.copy() for u in updates]).tobytes()


def test_the_next_model_adds_the_aggregate_of_accepted_updates_only() -> None:
    base = np.array([0.5, -0.5])
    assert np.array_equal(next_model(base, [], 0), base)
    assert np.array_equal(next_model(base, [np.array([1.0, 1.0]), np.array([3.0, 3.0])], rule_id("fedavg")), [2.5, 1.5])
    with pytest.raises(AggregationError, match="coordinates"):
        next_model(base, [np.array([1.0, 1.0, 1.0])], 0)


def test_a_spec_round_trips_through_its_canonical_bytes() -> None:
    spec = AllianceSpec.for_dataset("breast_cancer")
    data = spec.to_bytes()
    assert AllianceSpec.from_bytes(data) == spec
    assert data == AllianceSpec.for_dataset("breast_cancer").to_bytes()  # same spec, same hash on chain
    assert spec.architecture == {"input_dim": 30, "hidden_sizes": [], "num_classes": 2}
    model = spec.initial_model_bytes()
    assert hashlib.sha256(model).digest() == hashlib.sha256(spec.initial_model_bytes()).digest()
    assert decode_update(model).shape == (62,)
    with pytest.raises(ValidationError):
        AllianceSpec.from_bytes(b'{"format": "something else"}')
    with pytest.raises(ValidationError):
        AllianceSpec(dataset="shakespeare")
