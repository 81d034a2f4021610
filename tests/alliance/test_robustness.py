"""Under every attack, with 30% attackers, Covey's default rule stays near the honest mean while FedAvg is dragged off;
and voters scoring update by update reject the poisoners without rejecting the honest proposers beside them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from covey.alliance import DEFAULT_RULE, AggregationError, accept_mask, aggregate, attacks, fedavg, score_updates

N_HONEST, N_ATTACKERS, DIM, HONEST_SIGMA = 7, 3, 20, 0.1
NEAR, FAR = 0.15, 0.25  # relative distance from the honest mean


def honest_round(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Seven honest updates and the three honest updates the attackers would have sent, all ~ N(mu, 0.1^2)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.0, DIM)
    honest = [mu + rng.normal(0.0, HONEST_SIGMA, DIM) for _ in range(N_HONEST)]
    attackers_own = [mu + rng.normal(0.0, HONEST_SIGMA, DIM) for _ in range(N_ATTACKERS)]
    return honest, attackers_own


ATTACKS: dict[str, Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]] = {
    "sign_flip": lambda honest, own: [attacks.sign_flip(u) for u in own],
    "gaussian_noise": lambda honest, own: [attacks.gaussian_noise(u, seed=i, sigma=10.0) for i, u in enumerate(own)],
    "scaled": lambda honest, own: [attacks.scaled(u, 10.0) for u in own],
    "ipm": lambda honest, own: [attacks.ipm(honest, epsilon=0.5)] * N_ATTACKERS,
    "free_rider": lambda honest, own: [attacks.free_rider(u) for u in own],
}


def relative_error(candidate: np.ndarray, honest: list[np.ndarray]) -> float:
    honest_mean = np.mean(honest, axis=0)
    return float(np.linalg.norm(candidate - honest_mean) / np.linalg.norm(honest_mean))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_the_default_rule_resists_what_drags_fedavg_off(attack: str, seed: int) -> None:
    honest, own = honest_round(seed)
    updates = honest + ATTACKS[attack](honest, own)
    assert relative_error(aggregate(DEFAULT_RULE, updates), honest) < NEAR
    assert relative_error(fedavg(updates), honest) > FAR


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alie_moves_every_rule_only_a_little_per_round(seed: int) -> None:
    # ALIE hides inside the honest spread: per round it moves FedAvg and the robust rules alike by
    # well under one honest update's noise, and wins only by accumulating over rounds. That is why
    # voters also score each update rather than trust any single rule.
    honest, _ = honest_round(seed)
    updates = honest + [attacks.alie(honest, N_ATTACKERS)] * N_ATTACKERS
    assert relative_error(aggregate(DEFAULT_RULE, updates), honest) < NEAR
    assert relative_error(fedavg(updates), honest) < NEAR


# A logistic-regression round in plain numpy: every client holds its own data, the update is one
# gradient step from the global weights, and a label-flipping attacker trains on mirrored labels.
TRUE_WEIGHTS = np.array([2.0, -1.0, 0.5, 1.5, -2.0])


def client_data(rng: np.random.Generator, n_examples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    features = rng.normal(size=(n_examples, TRUE_WEIGHTS.shape[0]))
    return features, (features @ TRUE_WEIGHTS > 0).astype(np.int64)


def local_update(weights: np.ndarray, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    predictions = 1.0 / (1.0 + np.exp(-(features @ weights)))
    return -2.0 * features.T @ (predictions - labels) / labels.shape[0]


def accuracy(weights: np.ndarray, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((features @ weights > 0).astype(np.int64) == labels))


def label_flip_round(seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    global_weights = np.zeros_like(TRUE_WEIGHTS)
    honest = [local_update(global_weights, *client_data(rng)) for _ in range(N_HONEST)]
    poisoned = []
    for _ in range(N_ATTACKERS):
        features, labels = client_data(rng)
        poisoned.append(local_update(global_weights, features, attacks.label_flip(labels, n_classes=2)))
    return global_weights, honest, poisoned


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_flipping_clients_do_not_steer_the_default_rule(seed: int) -> None:
    _, honest, poisoned = label_flip_round(seed)
    assert relative_error(aggregate(DEFAULT_RULE, honest + poisoned), honest) < NEAR
    assert relative_error(fedavg(honest + poisoned), honest) > FAR


def test_a_voter_rejects_each_poisoner_and_keeps_each_honest_proposer() -> None:
    global_weights, honest, flipped = label_flip_round(seed=4)
    proposals = [*honest, flipped[0], attacks.free_rider(honest[0]), attacks.scaled(honest[1], -10.0)]
    voter_features, voter_labels = client_data(np.random.default_rng(99), n_examples=500)

    def evaluate(weights: np.ndarray) -> float:
        return accuracy(weights, voter_features, voter_labels)

    deltas = score_updates(global_weights, proposals, evaluate)
    accepted = accept_mask(deltas, proposals, aggregate(DEFAULT_RULE, proposals))
    assert accepted == [True] * N_HONEST + [False, False, False]


def test_score_updates_measures_each_update_against_the_global_model() -> None:
    def evaluate(weights: np.ndarray) -> float:
        return float(weights.sum())

    assert score_updates(np.array([1.0, 1.0]), [np.array([0.5, 0.0]), np.array([-1.0, -1.0])], evaluate) == [
        0.5,
        -2.0,
    ]


def test_scoring_rejects_inconsistent_input() -> None:
    with pytest.raises(AggregationError, match="the metric for update 0 is nan"):
        score_updates(np.zeros(2), [np.ones(2)], lambda weights: float("nan") if weights.any() else 0.5)
    with pytest.raises(AggregationError, match="updates have 3 coordinates, global_vec has 2"):
        score_updates(np.zeros(2), [np.ones(3)], lambda weights: 0.0)
    with pytest.raises(AggregationError, match="got 1 score deltas for 2 updates"):
        accept_mask([0.0], [np.ones(2), np.ones(2)], np.ones(2))
    with pytest.raises(AggregationError, match="max_distance_ratio"):
        accept_mask([0.0], [np.ones(2)], np.ones(2), max_distance_ratio=0.5)
