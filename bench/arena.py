"""Arena benchmark: full task cycles (the demo's cast, 6 trainers and 7 validators) with their time split
into training, evaluation, chain work (time inside the JSON-RPC provider) and the rest; the chain's share
(goal: under 10%); and the gas per action for 4, 16 and 64 submissions (from bench/arena_gas.py).
Prints tables, writes bench/results/arena.json.

Two cycles: MNIST with a small CNN (a modest real task: `chain_share` is its share) and the demo's
digits MLP, whose models train in about a second, so it shows the chain's share at its worst.

Both run on a fresh embedded chain (the default backend) in a temporary COVEY_HOME.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "arena.json"
GAS_SIZES = [(4, 4), (16, 4), (64, 4)]
CHAIN_SHARE_GOAL = 0.10
BENCH_PHASE_S = 3_600
console = Console()


class ChainClock:
    """Time spent inside the chain's JSON-RPC provider (requests, EVM execution, receipts), cumulated."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.requests = 0

    def wrap(self, make_request: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return make_request(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.requests += 1

        return timed


@contextmanager
def bench_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="covey-bench-arena-") as home:
        os.environ["COVEY_HOME"] = home
        os.environ.pop("COVEY_RPC_URL", None)
        os.environ.pop("COVEY_STORE_URL", None)
        yield Path(home)


def cycles() -> dict[str, tuple[Any, dict[str, Any]]]:
    """The tasks to time: (spec, hyper-parameters per honest trainer) by name."""
    from covey.arena import Hyperparams
    from covey.arena.scenario import HYPERPARAMS
    from covey.ml import default_spec

    mnist = {
        "ada": Hyperparams(epochs=5, lr=3e-3),
        "hopper": Hyperparams(epochs=3, lr=5e-3),
        "alan": Hyperparams(epochs=2, lr=3e-3, architecture={"channels": [4, 8]}),
    }
    return {"mnist-cnn": (default_spec("mnist"), mnist), "digits-mlp": (default_spec("digits"), HYPERPARAMS)}


def measure_cycle(chain: Any, home: Path, spec: Any, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Set up the cast (not timed), then time one task from posting to settlement."""
    from covey.arena import ArenaClient, task_report
    from covey.arena.scenario import arena_address, build_nodes, cast, fund_and_stake, play, post
    from covey.chain import dev_accounts
    from covey.chain.deploy import deploy_suite, load_deployment
    from covey.errors import ChainError
    from covey.storage import open_store

    owner = dev_accounts(1)[0]
    with console.status("deploying the suite and staking the cast (not timed)"):
        try:
            deployment = load_deployment(chain)
        except ChainError:
            deployment = deploy_suite(chain, owner, commission_delay_s=10, unbonding_delay_s=100)
        client = ArenaClient(chain, arena_address(chain, deployment, owner))
        actors = cast()
        fund_and_stake(chain, deployment, client, actors)
        store = open_store(None, home)
        nodes = build_nodes(client, store, home, actors, hyperparams=hyperparams)
        client.task_count()  # warm the ABI and connection caches

    clock = ChainClock()
    provider = chain.w3.provider
    original = provider.make_request
    provider.make_request = clock.wrap(original)
    # web3 caches the provider's request function inside its middleware; forget it so the wrapper is used.
    provider._request_func_cache = ((), None)
    started = time.perf_counter()
    try:
        with console.status(f"one Arena task ({spec.dataset}): post, train, commit, reveal, score, settle"):
            # Hour-long phases and time travel between them: the bench times the work, not the waiting, on a
            # throw-away chain (a temporary COVEY_HOME) whose clock nobody pays against.
            posted = post(client, store, home, actors, spec, phases_s=(BENCH_PHASE_S,) * 4)
            play(client, nodes, posted.task_id, advance=lambda timestamp: _travel(chain, client, timestamp))
            report = task_report(client, posted.task_id)
    finally:
        provider.make_request = original
        provider._request_func_cache = ((), None)
    total = time.perf_counter() - started
    training = sum(node.seconds.get("training", 0.0) for node in nodes)
    evaluation = sum(node.seconds.get("evaluation", 0.0) for node in nodes)
    seconds = {
        "total": total,
        "training": training,
        "evaluation": evaluation,
        "chain": clock.seconds,
        "other": max(0.0, total - training - evaluation - clock.seconds),
    }
    return {
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "chain_share": round(clock.seconds / total, 4),
        "chain_requests": clock.requests,
        "submissions": len(report["submissions"]),
        "validators": len(report["validators"]),
        "winner_score": max(row["score"] for row in report["submissions"]),
    }


def _travel(chain: Any, client: Any, timestamp: int) -> None:
    gap = timestamp - client.now()
    if gap > 0:
        chain.increase_time(gap)


def measure_gas(chain: Any) -> dict[str, dict[str, int]]:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import arena_gas
    except ImportError:
        console.print("[yellow]bench/arena_gas.py is missing: no gas table[/]")
        return {}
    return dict(arena_gas.measure_gas(chain, GAS_SIZES))


def print_tables(results: dict[str, dict[str, Any]], gas: dict[str, dict[str, int]]) -> None:
    table = Table(title="One Arena task (6 submissions, 7 validators): seconds (share)", title_justify="left")
    table.add_column("work")
    for name in results:
        table.add_column(name, justify="right")
    for work in ("training", "evaluation", "chain", "other", "total"):
        cells = [
            f"{cycle['seconds'][work]:.2f} ({cycle['seconds'][work] / cycle['seconds']['total']:.1%})"
            for cycle in results.values()
        ]
        table.add_row(work, *cells)
    table.add_row("RPC requests", *(str(cycle["chain_requests"]) for cycle in results.values()))
    console.print(table)
    for name, cycle in results.items():
        verdict = "meets" if cycle["chain_share"] < CHAIN_SHARE_GOAL else "misses"
        console.print(
            f"{name}: chain share {cycle['chain_share']:.1%}, {verdict} the goal of under {CHAIN_SHARE_GOAL:.0%}"
        )
    if gas:
        actions = list(next(iter(gas.values())))
        gas_table = Table(title="Gas per action (max over the task's calls)", title_justify="left")
        gas_table.add_column("submissions x validators")
        for action in actions:
            gas_table.add_column(action, justify="right")
        for size, row in gas.items():
            gas_table.add_row(size, *(f"{row[action]:,}" for action in actions))
        console.print(gas_table)


def main() -> dict[str, Any]:
    from covey.chain import Chain

    with bench_home() as home, Chain.embedded(home / "chain") as chain:
        measured = {name: measure_cycle(chain, home, spec, params) for name, (spec, params) in cycles().items()}
        gas = measure_gas(chain)
    print_tables(measured, gas)
    main_cycle = next(iter(measured))
    results = {
        "backend": "embedded",
        "chain_share": measured[main_cycle]["chain_share"],
        "chain_share_task": main_cycle,
        "chain_share_goal": CHAIN_SHARE_GOAL,
        "cycles": measured,
        "gas": gas,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}")
    return results


if __name__ == "__main__":
    main()
