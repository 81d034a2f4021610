"""Alliance benchmark: robustness of each aggregation rule under attack, and the wall time of a Covey round.

1. Accuracy after a fixed number of rounds (digits, 10 clients, logistic regression) for every aggregator x
   attack x attacker fraction on IID and Dirichlet(0.1) splits, in process and off chain (the rules are the
   same pure functions the chain's voters run). Rows:
   - `covey` is the whole Covey configuration: a 7-voter committee (of 10 members, so 30% attackers never
     hold its majority) votes per update with `trust_votes` against the last global step that moved the
     model; attackers on it vote the honest mask inverted; the accepted updates are aggregated with
     `covey_trust` against the same reference;
   - `covey_5_voters` is the same with 5 voters: 8.3% of rounds then have an attacker majority, which
     accepts only the poison; the rule drops it and the round is lost (the reference survives it);
   - `covey_trust` is the rule alone over every update, `covey_default` the on-chain default rule;
   - `oracle` is FedAvg over the honest clients only.
   Goal: `covey` within 2 points of clean FedAvg on IID and within 1 point of the oracle on Dirichlet(0.1)
   at 30% attackers, for every attack.
2. Seconds per round: a Covey round (member processes, a served embedded chain, commit-reveal votes)
   against the same round as plain local FedAvg and in Flower's deployment engine (`bench/flower_round.py`).

    .venv/bin/python bench/alliance.py            # 0% and 30% attackers, one seed (~15 minutes on 2 cores)
    .venv/bin/python bench/alliance.py --full     # 0, 10, 30, 45% attackers
    .venv/bin/python bench/alliance.py --only covey,oracle,fedavg --seeds 3 --skip-rounds
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
from covey.alliance.aggregators import covey_trust  # noqa: E402
from covey.alliance.rules import aggregate_by_rule, rule_id  # noqa: E402
from covey.alliance.scoring import trust_votes  # noqa: E402
from covey.ml import TrainConfig, build_model, evaluate, flatten, train, unflatten  # noqa: E402
from covey.ml.datasets import Dataset, load_split  # noqa: E402

RESULTS = REPO / "bench" / "results" / "alliance.json"
CLIENTS = 10
ROUNDS = 15
COMMITTEES = {"covey": 7, "covey_5_voters": 5}  # voters of 10 members; 3 attackers outvote 5 voters in 8.3% of rounds
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
    "covey_5_voters",
    "oracle",
)
SPLITS = {"iid": None, "dirichlet_0.1": 0.1}
console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole tables


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
    committee: int,
) -> list[int]:
    """The indices a random committee of `committee` voters accepts by majority; attackers invert the honest mask.

    Honest voters vote what the rule keeps (`trust_votes` against the last global step): no voter's
    private data enters the decision, so honest non-IID updates are not voted down for being unlike
    the voter's own data, and an honest proposer is never slashed for an update the rule would use.
    """
    voters = rng.choice(CLIENTS, size=committee, replace=False)
    honest_mask = np.array(trust_votes(updates, reference), dtype=bool)
    votes = np.zeros(len(updates), dtype=int)
    for voter in voters:
        votes += ~honest_mask if int(voter) in attackers else honest_mask
    return [i for i in range(len(updates)) if votes[i] * 2 > committee]


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
        return covey_trust(updates, reference)
    if aggregator in COMMITTEES:
        accepted = committee_vote(world, model, base, updates, attackers, rng, reference, COMMITTEES[aggregator])
        if not accepted:
            return np.zeros_like(base)
        return covey_trust([updates[i] for i in accepted], reference)
    return aggregate_by_rule(rule_id(aggregator), updates)


def robustness(
    fractions: Sequence[float], seeds: Sequence[int], aggregators: Sequence[str] = AGGREGATORS
) -> list[dict[str, Any]]:
    results = []
    for split, alpha in SPLITS.items():
        worlds = {seed: make_world(alpha, seed) for seed in seeds}
        for fraction in fractions:
            for attack in ATTACKS if fraction > 0 else ("none",):
                for aggregator in aggregators:
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
    """Covey's gap per attack at 30% attackers: to clean FedAvg on IID, to the oracle on Dirichlet(0.1), in points."""

    def acc(aggregator: str, attack: str, fraction: float, split: str) -> float | None:
        key = (aggregator, attack, fraction, split)
        for row in results:
            if (row["aggregator"], row["attack"], row["fraction"], row["split"]) == key:
                return float(row["accuracy"])
        return None

    report: dict[str, Any] = {}
    for split, target, bound in (("iid", "clean FedAvg", 2.0), ("dirichlet_0.1", "the oracle", 1.0)):
        gaps: dict[str, float] = {}
        for attack in ATTACKS:
            reference = acc("fedavg", "none", 0.0, split) if split == "iid" else acc("oracle", attack, 0.3, split)
            covey = acc("covey", attack, 0.3, split)
            if reference is not None and covey is not None:
                gaps[attack] = round(100 * (reference - covey), 2)
        if not gaps:
            continue
        worst = max(gaps, key=gaps.__getitem__)
        report[split] = {
            "gap_to": target,
            "goal_points": bound,
            "gaps_points": gaps,
            "worst": {"attack": worst, "points": gaps[worst]},
            "goal_met": gaps[worst] <= bound,
            "attacks_over_goal": [attack for attack, gap in gaps.items() if gap > bound],
        }
    return report


def print_goals(report: dict[str, Any]) -> None:
    table = Table(title="covey at 30% attackers: gap in points (positive = below the target)")
    table.add_column("split")
    table.add_column("gap to")
    for attack in ATTACKS:
        table.add_column(attack, justify="right")
    table.add_column("worst", justify="right")
    table.add_column("goal")
    for split, row in report.items():
        cells = [f"{row['gaps_points'][a]:+.1f}" if a in row["gaps_points"] else "-" for a in ATTACKS]
        verdict = "met" if row["goal_met"] else f"NOT met ({', '.join(row['attacks_over_goal'])})"
        worst = f"{row['worst']['points']:.1f} ({row['worst']['attack']})"
        table.add_row(split, row["gap_to"], *cells, worst, f"<= {row['goal_points']:g}: {verdict}")
    console.print(table)


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
        **flower_round_time(config),
        "covey_rounds": covey_rounds,
        "members": len(config.behaviours),
        "proposers": config.proposers,
        "voters": config.voters,
    }


# --- Flower: round_s["flower"] comes from bench/flower_round.py (flower_round_s) when it can run here ---------
def flower_round_time(config: Any) -> dict[str, Any]:
    """`{"flower": seconds per round}` for the same rounds in Flower's deployment engine, or None with the reason."""
    try:
        from flower_round import flower_round_s  # bench/flower_round.py, beside this file
    except ImportError as error:
        return {"flower": None, "flower_note": f"not measured: bench/flower_round.py is not importable ({error})"}
    from covey.errors import CoveyError

    try:
        seconds = flower_round_s(config.rounds, len(config.behaviours), config=config)
    except CoveyError as error:  # Flower missing or the run failed: say so rather than guess a number
        return {"flower": None, "flower_note": f"not measured: {error}"}
    return {"flower": round(seconds, 3), "flower_note": "bench/flower_round.py: the same rounds as Flower SuperNodes"}


def print_results(results: list[dict[str, Any]], fractions: Sequence[float], aggregators: Sequence[str]) -> None:
    for split in SPLITS:
        for fraction in fractions:
            attacks_here = ATTACKS if fraction > 0 else ("none",)
            table = Table(title=f"accuracy after {ROUNDS} rounds: {split}, {fraction:.0%} attackers")
            table.add_column("aggregator")
            for attack in attacks_here:
                table.add_column(attack, justify="right")
            for aggregator in aggregators:
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
    parser.add_argument("--only", default=None, help="comma-separated aggregators to run (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    aggregators = AGGREGATORS if args.only is None else tuple(args.only.split(","))
    unknown = sorted(set(aggregators) - set(AGGREGATORS))
    if unknown:
        parser.error(f"unknown aggregators {', '.join(unknown)}; choose from {', '.join(AGGREGATORS)}")
    fractions = (0.0, 0.1, 0.3, 0.45) if args.full else (0.0, 0.3)
    results = robustness(fractions, list(range(args.seeds)), aggregators)
    print_results(results, fractions, aggregators)
    summary: dict[str, Any] = {
        "results": results,
        "goals": goals(results),
        "rounds": ROUNDS,
        "clients": CLIENTS,
        "seeds": args.seeds,
    }
    print_goals(summary["goals"])
    if args.skip_rounds:
        summary["round_s"] = {"covey": None, "local_fedavg": None, "flower": None, "note": "skipped (--skip-rounds)"}
    else:
        summary["round_s"] = round_times()
        console.print({k: v for k, v in summary["round_s"].items() if k != "covey_rounds"})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
