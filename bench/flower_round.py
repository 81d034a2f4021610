"""Seconds per round of the Covey alliance app in Flower's deployment engine (flwr 1.42), for `bench/alliance.py`.

The rounds are those of the Covey round in `bench/alliance.py`: digits, 5 members, per round 2 train (an
alliance's proposers) and 3 evaluate (its voters), the `covey_default` rule, lr 0.05. Each member is a
`flower-supernode` on 127.0.0.1 with its own partition, behind one `flower-superlink --insecure`; every
train or evaluate message starts a fresh `flwr-clientapp` process, and SuperNodes poll every 3 s.
A round's time is the ServerApp's clock from one round's end to the next (starting the deployment is
not counted); the result is the median over the rounds.

    .venv/bin/python bench/flower_round.py [--rounds 3] [--clients 5]
Prints a table and writes bench/results/flower.json (`round_s.flower`, per-round seconds and accuracy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from covey.alliance.flower import FlowerDeployment, FlowerRunReport, flower_bin_dir  # noqa: E402
from covey.alliance.runner import RunConfig  # noqa: E402

RESULTS = REPO / "bench" / "results" / "flower.json"
console = Console()


def bench_config(rounds: int = 3, clients: int = 5) -> RunConfig:
    """The alliance configuration `bench/alliance.py` times for Covey, with `rounds` rounds and `clients` members."""
    return RunConfig(dataset="digits", behaviours=("honest",) * clients, rounds=rounds, lr=0.05, phase_s=60)


def flower_run(rounds: int = 3, clients: int = 5, *, config: RunConfig | None = None) -> dict[str, Any]:
    """One Flower run of `config` (default: `bench_config(rounds, clients)`), started and stopped here.

    Returns the per-round seconds and held-out accuracies, the median round, and the deployment's
    start-up time. Raises `covey.alliance.flower.FlowerError` when Flower is missing or the run fails.
    """
    config = config or bench_config(rounds, clients)
    started = time.perf_counter()
    with FlowerDeployment(supernodes=len(config.behaviours)) as flower:
        startup_s = time.perf_counter() - started
        report: FlowerRunReport = flower.run(config)
    return {
        "flower": round(statistics.median(report.round_s), 3),
        "flower_rounds": [round(s, 3) for s in report.round_s],
        "accuracies": [round(a, 4) for a in report.accuracies],
        "startup_s": round(startup_s, 3),
        "run_wall_s": round(report.wall_s, 3),
        "members": len(config.behaviours),
        "proposers": config.proposers,
        "voters": config.voters,
        "rule": config.rule,
        "flwr": _flwr_version(),
        # Every message starts a fresh `flwr-clientapp`, which imports torch and the alliance participant
        # (web3 and eth-account with it) before training: this much of each phase of a round.
        "clientapp_import_s": round(_clientapp_import_s(), 3),
    }


def flower_round_s(rounds: int = 3, clients: int = 5, *, config: RunConfig | None = None) -> float:
    """Median wall seconds per Flower round over `rounds` rounds with `clients` SuperNodes (see `flower_run`)."""
    return float(flower_run(rounds, clients, config=config)["flower"])


def _flwr_version() -> str:
    return _flower_python("import flwr; print(flwr.__version__)") or "unknown"


def _clientapp_import_s() -> float:
    """Seconds the Flower environment's Python takes to import the ClientApp's module (caches warm)."""
    code = "import time; t = time.perf_counter(); import covey.alliance.flower.apps; print(time.perf_counter() - t)"
    return float(_flower_python(code))


def _flower_python(code: str) -> str:
    done = subprocess.run(
        [str(flower_bin_dir() / "python"), "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds to run (default 3)")
    parser.add_argument("--clients", type=int, default=5, help="SuperNodes, one per member (default 5)")
    args = parser.parse_args(argv)
    run = flower_run(args.rounds, args.clients)
    table = Table(title=f"Covey in Flower {run['flwr']}: {run['members']} SuperNodes, rule {run['rule']}")
    table.add_column("round", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("held-out accuracy", justify="right")
    table.add_row("0", "", f"{run['accuracies'][0]:.3f}")
    for number, (seconds, accuracy) in enumerate(zip(run["flower_rounds"], run["accuracies"][1:], strict=True), 1):
        table.add_row(str(number), f"{seconds:.2f}", f"{accuracy:.3f}")
    console.print(table)
    console.print(
        f"median {run['flower']:.2f} s per round; deployment start-up {run['startup_s']:.1f} s; "
        f"ClientApp import {run['clientapp_import_s']:.1f} s per message"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"round_s": run}, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
