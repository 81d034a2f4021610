"""Alliance benchmark: robustness of each aggregation rule under attack, and the wall time of a Covey round.

1. Accuracy after a fixed number of rounds (digits, 10 clients, logistic regression) for every aggregator x
   attack x attacker fraction on IID and Dirichlet(0.1) splits, in process and off chain (the rules are the
   same pure functions the chain's voters run). `covey` is the whole Covey configuration: the default rule
   over the updates a 5-voter committee accepts with per-update scoring (attackers on it vote against the
   honest majority); `oracle` is FedAvg over the honest clients only. Goal: `covey` within 2 points of clean
   FedAvg on IID and within 1 point of the oracle on Dirichlet(0.1) at 30% attackers, for every attack.
2. Seconds per round: a Covey round (member processes, a served embedded chain, commit-reveal votes)
   against the same round as plain local FedAvg. Flower's deployment engine is not measured: flwr 1.42 pins
   typer<0.21, rich<15, fastapi 0.138 and uvicorn 0.49, below this project's pins, so it is not installed.

    .venv/bin/python bench/alliance.py            # 0% and 30% attackers, one seed (a few minutes)
    .venv/bin/python bench/alliance.py --full     # 0, 10, 30, 45% attackers
Prints tables and writes bench/results/alliance.json (`results`, `round_s`, `goals`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from covey.alliance import aggregate, attacks, fltrust  # noqa: E402
from covey.alliance.aggregators.trust import covey_trust, trust_mask  # noqa: E402
from covey.alliance.rules import aggregate_by_rule, rule_id  # noqa: E402
from covey.ml import TrainConfig, build_model, evaluate, flatten, train, unflatten  # noqa: E402
from covey.ml.datasets import Dataset, load_split  # noqa: E402

RESULTS = REPO / "bench" / "results" / "alliance.json"
CLIENTS = 10
ROUNDS = 15
COMMITTEE = 5  # with 10 clients and 30% attackers, 5 voters are rarely captured (3 often are)
ROOT_SET_SIZE = 50
LOCAL = TrainConfig(epochs=1, lr=0.05, batch_size=32, num_threads=1)
ATTACKS = ("none", "sign_flip", "gaussian_noise", "scaled", "alie", "ipm", "free_rider", "label_flip")
AGGREGATORS = (
    "fedavg",
    "coordinate_median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "fltrust",
    "covey_default",
    "covey_trust",
    "covey",
    "oracle",
)
SPLITS = {"iid": None, "dirichlet_0.1": 0.1}
MIN_COSINE = 0.1
console = Console()


@dataclass
class World:
    """The data of one split: each client's private set, the test set, and a small trusted root set (FLTrust)."""

    clients: list[Dataset]
    test: Dataset
    root: Dataset
    num_classes: int


def make_world(alpha: float | None, seed: int) -> World:
    split = load_split("digits", seed=seed)
    train_set = split.public_train
    if alpha is None:
        parts = train_set.partition_iid(CLIENTS, seed)
    else:
        parts = train_set.partition_dirichlet(CLIENTS, alpha, seed, min_part_size=5)
    validation = split.private_validation
    root = validation.subset(np.arange(ROOT_SET_SIZE))
    test = validation.subset(np.arange(ROOT_SET_SIZE, len(validation)))
    return World([train_set.subset(p) for p in parts], test, root, train_set.num_classes)


def new_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", {"input_dim": 64, "hidden_sizes": [], "num_classes": 10})


def local_update(model: torch.nn.Module, start: np.ndarray, data: Dataset, seed: int) -> np.ndarray:
    unflatten(model, start.astype(np.float32))
    config = TrainConfig(**{**LOCAL.__dict__, "seed": seed})
    train(model, data, config, progress=False)
    return flatten(model).astype(np.float64) - start.astype(np.float32).astype(np.float64)


def accuracy(model: torch.nn.Module, vector: np.ndarray, data: Dataset) -> float:
    return evaluate(unflatten(model, vector.astype(np.float32)), data, "accuracy")


def poisoned(attack: str, own: list[np.ndarray], honest: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The attackers' updates under `attack`, from their own honest updates and the honest clients' updates."""
    if attack == "sign_flip":
        return [attacks.sign_flip(u, 4.0) for u in own]
    if attack == "gaussian_noise":
        return [attacks.gaussian_noise(u, seed + i, 10 * float(np.std(u)) + 1e-3) for i, u in enumerate(own)]
    if attack == "scaled":
        return [attacks.scaled(u, 10.0) for u in own]
    if attack == "alie":
        return [attacks.alie(honest, len(own))] * len(own)
    if attack == "ipm":
        return [attacks.ipm(honest, 0.5)] * len(own)
    if attack == "free_rider":
        return [attacks.free_rider(u) for u in own]
    return own  # label_flip poisons the data, not the update; "none" leaves it alone


def committee_vote(
    world: World,
    model: torch.nn.Module,
    base: np.ndarray,
    updates: list[np.ndarray],
    attackers: set[int],
    rng: np.random.Generator,
    reference: np.ndarray | None,
) -> list[int]:
    """The indices a random voting committee accepts by majority; attackers on it vote the honest mask inverted.

    Honest voters vote what the rule keeps (`trust_mask` against the previous global step): no voter's
    private data enters the decision, so honest non-IID updates are not voted down for being unlike
    the voter's own data, and an honest proposer is never slashed for an update the rule would use.
    """
    voters = rng.choice(CLIENTS, size=COMMITTEE, replace=False)
    honest_mask = np.array(trust_mask(updates, reference, min_cosine=MIN_COSINE), dtype=bool)
    votes = np.zeros(len(updates), dtype=int)
    for voter in voters:
        votes += ~honest_mask if int(voter) in attackers else honest_mask
    return [i for i in range(len(updates)) if votes[i] * 2 > COMMITTEE]


def run_config(world: World, aggregator: str, attack: str, fraction: float, seed: int) -> float:
    """Accuracy on the test set after `ROUNDS` rounds with every client proposing each round."""
    model = new_model()
    base = flatten(model).astype(np.float64)
    n_attackers = round(fraction * CLIENTS)
    attackers = set(range(n_attackers))
    rng = np.random.default_rng(seed)
    reference: np.ndarray | None = None  # the last global step that moved the model (what trust_mask compares to)
    for round_number in range(ROUNDS):
        updates: list[np.ndarray] = []
        for client, data in enumerate(world.clients):
            if client in attackers and attack == "label_flip" and data.targets is not None:
                flipped = attacks.label_flip(data.targets, world.num_classes)
                data = Dataset(data.name, data.task, data.inputs, flipped, data.num_classes)
            updates.append(local_update(model, base, data, seed * 1_000 + round_number * 100 + client))
        honest = [u for i, u in enumerate(updates) if i not in attackers]
        if attackers and attack != "none":
            own = [updates[i] for i in sorted(attackers)]
            updates = poisoned(attack, own, honest, seed + round_number) + honest
        moved = step(world, model, base, aggregator, updates, honest, attackers, rng, seed + round_number, reference)
        base = base + moved
        if np.any(moved):
            reference = moved
    return accuracy(model, base, world.test)


def step(
    world: World,
    model: torch.nn.Module,
    base: np.ndarray,
    aggregator: str,
    updates: list[np.ndarray],
    honest: list[np.ndarray],
    attackers: set[int],
    rng: np.random.Generator,
    seed: int,
    reference: np.ndarray | None,
) -> np.ndarray:
    if aggregator == "oracle":
        return aggregate("fedavg", honest)
    if aggregator == "fltrust":
        root = local_update(model, base, world.root, seed)
        return fltrust(updates, root, max_norm_ratio=3.0)
    if aggregator == "covey_trust":
        return covey_trust(updates, reference, min_cosine=MIN_COSINE)
    if aggregator == "covey":
        accepted = committee_vote(world, model, base, updates, attackers, rng, reference)
        if not accepted:
            return np.zeros_like(base)
        return covey_trust([updates[i] for i in accepted], reference, min_cosine=MIN_COSINE)
    return aggregate_by_rule(rule_id(aggregator), updates)


def robustness(fractions: Sequence[float], seeds: Sequence[int]) -> list[dict[str, Any]]:
    results = []
    for split, alpha in SPLITS.items():
        worlds = {seed: make_world(alpha, seed) for seed in seeds}
        for fraction in fractions:
            for attack in ATTACKS if fraction > 0 else ("none",):
                for aggregator in AGGREGATORS:
                    started = time.perf_counter()
                    scores = [run_config(worlds[s], aggregator, attack, fraction, s) for s in seeds]
                    results.append(
                        {
                            "aggregator": aggregator,
                            "attack": attack,
                            "fraction": fraction,
                            "split": split,
                            "accuracy": round(statistics.mean(scores), 4),
                            "seeds": len(seeds),
                        }
                    )
                    elapsed = time.perf_counter() - started
                    console.print(
                        f"{split:>13} f={fraction:.2f} {attack:>14} {aggregator:>17}: "
                        f"{results[-1]['accuracy']:.3f} ({elapsed:.1f}s)"
                    )
    return results


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Covey's worst gap at 30% attackers: to clean FedAvg on IID, to the oracle on Dirichlet(0.1)."""

    def acc(aggregator: str, attack: str, fraction: float, split: str) -> float | None:
        for row in results:
            key = (row["aggregator"], row["attack"], row["fraction"], row["split"])
            if key == (aggregator, attack, fraction, split):
                return float(row["accuracy"])
        return None

    report: dict[str, Any] = {}
    clean = acc("fedavg", "none", 0.0, "iid")
    gaps_iid = {a: clean - (acc("covey", a, 0.3, "iid") or 0.0) for a in ATTACKS if clean is not None}
    gaps_dir = {
        a: (acc("oracle", a, 0.3, "dirichlet_0.1") or 0.0) - (acc("covey", a, 0.3, "dirichlet_0.1") or 0.0)
        for a in ATTACKS
    }
    if gaps_iid:
        worst = max(gaps_iid, key=gaps_iid.__getitem__)
        report["iid_worst_gap_to_clean_fedavg"] = {"attack": worst, "points": round(100 * gaps_iid[worst], 2)}
        report["iid_goal_met"] = gaps_iid[worst] <= 0.02
    worst = max(gaps_dir, key=gaps_dir.__getitem__)
    report["dirichlet_worst_gap_to_oracle"] = {"attack": worst, "points": round(100 * gaps_dir[worst], 2)}
    report["dirichlet_goal_met"] = gaps_dir[worst] <= 0.01
    return report


def round_times() -> dict[str, Any]:
    """Seconds per training round: Covey (member processes, served chain, votes) and plain local FedAvg."""
    from covey.alliance.runner import RunConfig, private_partition, run_processes
    from covey.config import get_settings

    config = RunConfig(dataset="digits", behaviours=("honest",) * 5, rounds=3, lr=0.05, phase_s=60)
    with tempfile.TemporaryDirectory() as home:
        os.environ["COVEY_HOME"] = home
        os.environ.pop("COVEY_RPC_URL", None)
        run = run_processes(config, get_settings())
    covey_rounds = [r.seconds for r in run.rounds if r.accuracy is not None]

    model = new_model()
    base = flatten(model).astype(np.float64)
    parts = [private_partition(config, i) for i in range(len(config.behaviours))]
    local_rounds = []
    for round_number in range(config.rounds):
        started = time.perf_counter()
        chosen = [(round_number * config.proposers + k) % len(parts) for k in range(config.proposers)]
        updates = [local_update(model, base, parts[i], round_number * 10 + i) for i in chosen]
        base = base + aggregate("fedavg", updates)
        local_rounds.append(time.perf_counter() - started)
    covey_s = statistics.median(covey_rounds)
    local_s = statistics.median(local_rounds)
    return {
        "covey": round(covey_s, 3),
        "local_fedavg": round(local_s, 3),
        "flower": None,
        "flower_note": "not measured: flwr 1.42 pins typer<0.21, rich<15, fastapi 0.138, uvicorn 0.49",
        "covey_rounds": covey_rounds,
        "members": len(config.behaviours),
        "proposers": config.proposers,
        "voters": config.voters,
    }


def print_results(results: list[dict[str, Any]], fractions: Sequence[float]) -> None:
    for split in SPLITS:
        for fraction in fractions:
            attacks_here = ATTACKS if fraction > 0 else ("none",)
            table = Table(title=f"accuracy after {ROUNDS} rounds: {split}, {fraction:.0%} attackers")
            table.add_column("aggregator")
            for attack in attacks_here:
                table.add_column(attack, justify="right")
            for aggregator in AGGREGATORS:
                row = [aggregator]
                for attack in attacks_here:
                    match = next(
                        r
                        for r in results
                        if (r["aggregator"], r["attack"], r["fraction"], r["split"])
                        == (aggregator, attack, fraction, split)
                    )
                    row.append(f"{match['accuracy']:.3f}")
                table.add_row(*row)
            console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="0, 10, 30 and 45%% attackers (default: 0 and 30%%)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds to average over")
    parser.add_argument("--skip-rounds", action="store_true", help="skip the round-time measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fractions = (0.0, 0.1, 0.3, 0.45) if args.full else (0.0, 0.3)
    results = robustness(fractions, list(range(args.seeds)))
    print_results(results, fractions)
    summary: dict[str, Any] = {"results": results, "goals": goals(results), "rounds": ROUNDS, "clients": CLIENTS}
    console.print(summary["goals"])
    if not args.skip_rounds:
        summary["round_s"] = round_times()
        console.print({k: v for k, v in summary["round_s"].items() if k != "covey_rounds"})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
