"""Demo stage: five hospitals train a breast-cancer classifier together; the one that poisons its updates is slashed.

Each hospital keeps its own patients (a share of scikit-learn's Wisconsin breast-cancer data) in its
own `Participant`; only update hashes, votes and update bytes ever leave it. Rounds run on the
demo's chain with committees drawn by stake, and the stage prints accuracy per round with the
rewards and slashes the chain paid out.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.table import Table

from covey.alliance.client import AllianceClient
from covey.alliance.runner import AllianceRun, RoundReport, RunConfig, run_in_process
from covey.chain.alliance_deploy import ensure_alliance
from covey.chain.chain import dev_accounts
from covey.demo.runner import StageContext
from covey.storage import open_store

HOSPITALS = ("St Mary's", "Northside", "Riverside", "Lakeview", "Mallory Clinic")
BEHAVIOURS = ("honest", "honest", "honest", "honest", "sign_flip")
PHASE_S = 15


def alliance_stage(ctx: StageContext) -> dict[str, Any]:
    """Run a three-round hospital alliance with one poisoner on the demo chain and report what happened."""
    say = ctx.console.print
    owner = dev_accounts(1)[0]  # the demo's deployer: it holds the genesis COV and owns the suite
    client = AllianceClient(ctx.chain, ensure_alliance(ctx.chain, ctx.deployment, owner))
    store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
    # Phases end early once everyone has acted; a phase someone sits out is waited for in real time.
    config = RunConfig(dataset="breast_cancer", behaviours=BEHAVIOURS, rounds=3, proposers=2, voters=3, phase_s=PHASE_S)
    say(
        f"{len(HOSPITALS)} hospitals each keep their own breast-cancer patients and stake 100 COV; "
        f"{HOSPITALS[-1]} poisons its updates (sign flip x4) and votes against the others. "
        "Each round the chain draws 2 proposers and 3 voters by stake."
    )
    names: dict[str, str] = {}

    def on_round(report: RoundReport) -> None:
        if not names:  # members joined in hospital order
            names.update(zip(client.members(report.alliance_id), HOSPITALS, strict=True))
        accuracy = "confirms the final model" if report.accuracy is None else f"accuracy {report.accuracy:.1%}"
        slashed = ", ".join(names.get(a, a[:8]) for a in report.slashes) or "nobody"
        say(f"round {report.round}: {accuracy}; slashed: {slashed}")

    staking = ctx.deployment.address("Staking")
    run, _ = run_in_process(ctx.chain, client, staking, store, config, owner, on_round=on_round)
    say(_rounds_table(run, names))
    say(_members_table(run, names))
    say(
        f"accuracy on held-out patients: {run.initial_accuracy:.1%} before, {run.final_accuracy:.1%} after; "
        f"final model {client.global_model(run.alliance_id)[0].hex()[:16]}... confirmed on chain"
    )
    return {
        "allianceId": run.alliance_id,
        "initialAccuracy": round(run.initial_accuracy, 4),
        "finalAccuracy": round(run.final_accuracy, 4),
        "accuracyPerRound": [r.accuracy for r in run.rounds if r.accuracy is not None],
        "slashedCov": {names[m.address]: _cov(m.slashed) for m in run.members if m.slashed},
        "rewardedCov": {names[m.address]: _cov(m.rewarded) for m in run.members if m.rewarded},
    }


def _cov(units: int, places: int = 2) -> str:
    """COV wei as a short decimal, e.g. 150000000000000000000 -> '150'."""
    text = f"{Decimal(units) / Decimal(10**18):,.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*row)
    return result


def _rounds_table(run: AllianceRun, names: dict[str, str]) -> Table:
    rows = []
    for report in run.rounds:
        rows.append(
            (
                str(report.round),
                ", ".join(names[a] for a in report.proposers) or "(closing round)",
                ", ".join(names[a] for a in report.accepted) or "-",
                ", ".join(names[a] for a in report.rejected) or "-",
                "-" if report.accuracy is None else f"{report.accuracy:.1%}",
                _cov(sum(report.rewards.values())),
                _cov(sum(report.slashes.values())),
            )
        )
    columns = ["round", "proposers", "accepted", "rejected", "accuracy", "paid COV", "slashed COV"]
    return _table("Alliance rounds", columns, rows)


def _members_table(run: AllianceRun, names: dict[str, str]) -> Table:
    rows = [
        (
            names[m.address],
            "poisoner" if m.behaviour != "honest" else "honest",
            _cov(m.stake_before),
            _cov(m.stake_after),
            _cov(m.rewarded),
            _cov(m.slashed),
        )
        for m in run.members
    ]
    columns = ["hospital", "plays", "stake before", "stake after", "rewarded COV", "slashed COV"]
    return _table("Hospitals", columns, rows)
