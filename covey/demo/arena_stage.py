"""The Arena chapter of `covey demo`: one full task with honest nodes and every built-in adversary.

It plays `covey.arena.scenario` (real-time phases of seconds) and prints the leaderboard, the
validators' standing, and every account's balance and stake before and after, with what the Arena
paid (rewards, the operator's commission) and took (slashes).
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from covey.arena.client import ArenaClient, Phase
from covey.arena.report import task_report
from covey.arena.scenario import (
    COV,
    Actor,
    arena_address,
    balances,
    build_nodes,
    cast,
    claim_delegation,
    fund_and_stake,
    play,
    post,
    staking_flows,
)
from covey.chain.chain import dev_accounts
from covey.demo.runner import StageContext
from covey.storage import open_store


def arena_stage(ctx: StageContext) -> dict[str, Any]:
    """Run one Arena task end to end on the demo chain; print and return its outcome."""
    console = ctx.console
    started = time.perf_counter()
    client = ArenaClient(ctx.chain, arena_address(ctx.chain, ctx.deployment, dev_accounts(1)[0]))
    store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
    home = ctx.settings.data_dir
    actors = cast()

    console.print(_cast_table(actors))
    with console.status("funding and staking the Arena cast"):
        fund_and_stake(ctx.chain, ctx.deployment, client, actors)
    before = balances(client, actors)
    first_block = ctx.chain.block_number() + 1

    posted = post(client, store, home, actors)
    manifest = posted.manifest
    console.print(
        f"task {posted.task_id}: train an MLP on digits, {manifest.train_examples} public training examples, "
        f"{manifest.validation_examples} held out (the key goes to validators only); pool 1,000 COV, top 3 paid"
    )

    def log(line: str) -> None:
        console.print(f"  {line}", style="dim", markup=False, highlight=False)

    def announce(phase: Phase) -> None:
        console.print(f"[bold]{phase.label}[/]")

    def advance(timestamp: int) -> None:
        seconds = timestamp - ctx.chain.now()
        if seconds > 0:
            console.print(f"[dim]waiting {seconds} s for the next phase[/]")
        ctx.chain.wait_until(timestamp)

    nodes = build_nodes(client, store, home, actors, log)
    phase_seconds = play(client, nodes, posted.task_id, on_phase=announce, advance=advance)

    report = task_report(client, posted.task_id)
    claimed = claim_delegation(client, actors)
    after = balances(client, actors)
    flows = staking_flows(client, first_block)
    names = {actor.address: actor.name for actor in actors.values()}
    console.print(_leaderboard_table(report, names))
    console.print(_validator_table(report, names))
    console.print(_balance_table(actors, before, after, flows))
    winner = names.get(report["winner"] or "", report["winner"])
    console.print(
        f"winner: [bold]{winner}[/]; the delegator claimed {claimed / COV:,.2f} COV of ada's reward; "
        f"Arena stage {time.perf_counter() - started:.1f}s"
    )
    return {
        "taskId": posted.task_id,
        "winner": winner,
        "ranking": [names.get(row["trainer"], row["trainer"]) for row in report["submissions"] if row["eligible"]],
        "trainerPaidCov": report["trainerPaid"] / COV,
        "validatorPaidCov": report["validatorPaid"] / COV,
        "slashedCov": {names[address]: flow["slashed"] / COV for address, flow in flows.items() if flow["slashed"] > 0},
        "phaseSeconds": {label: round(seconds, 2) for label, seconds in phase_seconds.items()},
    }


def _cov(units: int, signed: bool = False) -> str:
    if signed:
        return "" if units == 0 else f"{units / COV:+,.2f}"
    return f"{units / COV:,.2f}"


def _table(title: str, columns: list[str], left: set[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def _leaderboard_table(report: dict[str, Any], names: dict[str, str]) -> Table:
    table = _table(
        f"Leaderboard, task {report['taskId']} (accuracy on held-out data; baseline {report['baselineScore']:.2f})",
        ["rank", "trainer", "consensus", "eligible", "payout", "slashed"],
        {"trainer", "eligible"},
    )
    for row in report["submissions"]:
        table.add_row(
            str(row["rank"] or "-"),
            names.get(row["trainer"], row["trainer"]),
            f"{row['score']:.4f}" if row["revealed"] else "not revealed",
            "yes" if row["eligible"] else "no",
            _cov(row["payout"]),
            _cov(row["slashed"]),
        )
    return table


def _validator_table(report: dict[str, Any], names: dict[str, str]) -> Table:
    table = _table(
        f"Validators (slashed above a mean deviation of {report['tolerance']:.2f})",
        ["validator", "weight", "revealed", "mean deviation", "payout", "slashed"],
        {"validator", "revealed"},
    )
    for row in report["validators"]:
        table.add_row(
            names.get(row["validator"], row["validator"]),
            _cov(row["weight"]),
            "yes" if row["revealed"] else "no",
            f"{row['meanDeviationScore']:.4f}",
            _cov(row["payout"]),
            _cov(row["slashed"]),
        )
    return table


def _cast_table(actors: dict[str, Actor]) -> Table:
    table = _table("The cast", ["account", "role", "stake", "behaviour"], {"account", "role", "behaviour"})
    for actor in actors.values():
        table.add_row(actor.name, actor.role, _cov(actor.stake_cov * COV) if actor.stake_cov else "", actor.behaviour)
    return table


def _balance_table(
    actors: dict[str, Actor],
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    flows: dict[str, dict[str, int]],
) -> Table:
    table = _table(
        "Balances and stakes after the task, their changes, and what the Arena paid or took (COV)",
        ["account", "balance", "change", "stake", "change ", "reward", "commission", "slashed"],
        {"account"},
    )
    for actor in actors.values():
        old, new = before[actor.address], after[actor.address]
        flow = flows.get(actor.address, {})
        table.add_row(
            actor.name,
            _cov(new["cov"]),
            _cov(new["cov"] - old["cov"], signed=True),
            _cov(new["stake"]) if actor.role != "creator" else "",
            _cov(new["stake"] - old["stake"], signed=True),
            _cov(flow.get("reward", 0), signed=True),
            _cov(flow.get("commission", 0), signed=True),
            _cov(-flow.get("slashed", 0), signed=True),
        )
    return table
