"""What every member recomputes off chain: the rule an id names, the next global model, the spec's bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from covey.alliance import AggregationError, aggregate, fedavg
from covey.alliance.aggregators import covey_trust
from covey.alliance.canonical import decode_update
from covey.alliance.rules import (
    RULE_NAMES,
    aggregate_by_rule,
    min_proposers,
    needs_reference,
    next_model,
    rule_id,
    rule_name,
    trust_reference,
)
from covey.alliance.runner import RunConfig
from covey.alliance.spec import AllianceSpec
from covey.errors import ValidationError


def test_rule_ids_follow_the_contracts_numbering(world) -> None:
    assert RULE_NAMES[0] == "covey_default"
    assert [rule_id(name) for name in RULE_NAMES] == list(range(7))
    assert rule_name(4) == "krum"
    assert rule_name(6) == "covey_trust"
    # The contract accepts exactly these ids.
    assert world.alliance.functions.MAX_RULE_ID().call() == len(RULE_NAMES) - 1
    with pytest.raises(AggregationError, match="unknown alliance rule"):
        rule_id("fltrust")  # needs a root update training cannot reproduce bit for bit
    with pytest.raises(AggregationError):
        rule_name(7)


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


def test_covey_trust_aggregates_against_the_reference_it_is_given() -> None:
    trust = rule_id("covey_trust")
    updates = [np.array([1.0, 1.0]), np.array([0.0, 0.0]), np.array([-1.0, 0.2]), np.array([2.0, 0.0])]
    along_x = np.array([1.0, 0.0])
    # The last step went along x: the free-rider and the update pointing back are dropped.
    assert np.array_equal(aggregate_by_rule(trust, updates, along_x), [1.5, 0.5])
    assert np.array_equal(aggregate_by_rule(trust, updates, along_x), covey_trust(updates, along_x))
    # Without one (the first round) the reference is the round's own covey_default aggregate.
    assert np.array_equal(aggregate_by_rule(trust, updates), covey_trust(updates))
    # The other rules are functions of the updates alone.
    assert np.array_equal(aggregate_by_rule(rule_id("fedavg"), updates, along_x), fedavg(updates))
    assert [needs_reference(rule) for rule in range(len(RULE_NAMES))] == [False] * 6 + [True]


def test_the_next_model_adds_the_aggregate_of_accepted_updates_only() -> None:
    base = np.array([0.5, -0.5])
    assert np.array_equal(next_model(base, [], 0), base)
    assert np.array_equal(next_model(base, [np.array([1.0, 1.0]), np.array([3.0, 3.0])], rule_id("fedavg")), [2.5, 1.5])
    with pytest.raises(AggregationError, match="coordinates"):
        next_model(base, [np.array([1.0, 1.0, 1.0])], 0)


def test_covey_trust_alliances_draw_three_proposers_or_more() -> None:
    # Two updates, one sign-flipped x4: their covey_default aggregate, the rule's first reference, points
    # the flip's way, so the rule would keep the flip and drop the honest update.
    honest = np.array([1.0, 0.5])
    assert covey_trust([honest, -4 * honest]).tolist() == [-4.0, -2.0]
    assert covey_trust([honest, 1.1 * honest, -4 * honest]) == pytest.approx(1.05 * honest)
    assert min_proposers(rule_id("covey_trust")) == 3 and min_proposers(rule_id("covey_default")) == 1
    with pytest.raises(ValidationError, match="covey_trust needs at least 3 proposers"):
        RunConfig(rule="covey_trust", proposers=2, voters=3)
    assert RunConfig(rule="covey_trust", proposers=3, voters=3).rule == "covey_trust"


def test_the_next_model_under_covey_trust_follows_the_replayed_reference() -> None:
    # Rounds 1 and 2 started from these models; round 2's reference is the step between them.
    history = {1: np.array([0.0, 0.0]), 2: np.array([0.5, -0.5])}
    reference = trust_reference(history.__getitem__, 2)
    assert np.array_equal(reference, [0.5, -0.5])
    accepted = [np.array([0.2, -0.2]), np.array([-0.4, 0.4]), np.array([0.3, -0.1])]
    # The update pointing back is dropped; the kept two are averaged and added.
    model = next_model(history[2], accepted, rule_id("covey_trust"), reference)
    assert model == pytest.approx([0.75, -0.65])
    assert trust_reference(history.__getitem__, 1) is None


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
