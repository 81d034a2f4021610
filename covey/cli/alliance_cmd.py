"""`covey alliance ...`: create and join alliances, run one with every member in its own process, show status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from covey.cli._context import Context, open_context
from covey.cli._output import console, format_units, parse_amount, print_json, table
from covey.errors import ValidationError

if TYPE_CHECKING:
    from covey.alliance.client import AllianceClient
    from covey.alliance.runner import AllianceRun

app = typer.Typer(
    help="Alliance: federated learning with staked, voting members (create, join, run, status).", no_args_is_help=True
)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
FROM_OPTION = typer.Option(
    None, "--from", help="Signing account (wallet name, address or dev0..dev9); default COVEY_KEY."
)
DATASETS = "breast_cancer, digits or mnist"


def alliance_client(ctx: Context) -> AllianceClient:
    """The suite's Alliance; on a dev chain whose suite predates it, deployed by dev0 (the suite's owner)."""
    from covey.alliance.client import AllianceClient
    from covey.chain.alliance_deploy import ensure_alliance
    from covey.chain.chain import dev_accounts

    owner = dev_accounts(1)[0]
    deployer = owner if ctx.chain.is_local and ctx.deployment.deployer == owner.address else None
    return AllianceClient(ctx.chain, ensure_alliance(ctx.chain, ctx.deployment, deployer))


@app.command()
def create(
    dataset: str = typer.Option("breast_cancer", help=f"What members' private data looks like: {DATASETS}."),
    rounds: int = typer.Option(3, help="Training rounds (a closing round then confirms the final model)."),
    proposers: int = typer.Option(2, help="Proposers drawn per round."),
    voters: int = typer.Option(3, help="Voters drawn per round."),
    min_stake: str = typer.Option("100", help="Participant stake (COV) a member needs."),
    pool: str = typer.Option("1000", help="Reward pool in COV, paid by you."),
    slash_percent: float = typer.Option(50.0, help="Slash per offence, in percent of the minimum stake."),
    phase: int = typer.Option(60, help="Seconds per phase (proposals, vote commits, reveals)."),
    rule: str = typer.Option(
        "covey_default",
        help="Aggregation rule (covey_default, fedavg, coordinate_median, trimmed_mean, krum, multi_krum, "
        "covey_trust; covey_trust needs 3 or more proposers).",
    ),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a model spec and initial model to the store and create an alliance funded by you."""
    from covey.alliance.client import AllianceParams
    from covey.alliance.rules import min_proposers, rule_id
    from covey.alliance.spec import AllianceSpec
    from covey.storage import open_store

    if not 0 <= slash_percent <= 100:
        raise ValidationError(f"slash percent must be between 0 and 100, got {slash_percent}")
    fewest_proposers = min_proposers(rule_id(rule))
    if proposers < fewest_proposers:
        raise ValidationError(f"{rule} needs at least {fewest_proposers} proposers a round, got {proposers}")
    spec = AllianceSpec.for_dataset(dataset)
    with open_context() as ctx:
        signer = ctx.signer(from_)
        client = alliance_client(ctx)
        store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
        spec_ref, model_ref = store.put(spec.to_bytes()), store.put(spec.initial_model_bytes())
        params = AllianceParams(
            spec_hash=spec_ref.bytes32,
            initial_model_hash=model_ref.bytes32,
            reward_pool=parse_amount(pool, what="pool"),
            rounds=rounds,
            proposers_per_round=proposers,
            voters_per_round=voters,
            min_stake=parse_amount(min_stake, what="minimum stake"),
            slash_bps=round(slash_percent * 100),
            propose_duration_s=phase,
            commit_duration_s=phase,
            reveal_duration_s=phase,
            rule_id=rule_id(rule),
        )
        alliance_id = client.create(params, signer)
        data = {
            "allianceId": alliance_id,
            "alliance": client.address,
            "spec": spec_ref.sha256,
            "initialModel": model_ref.sha256,
        }
        if as_json:
            print_json(data)
        else:
            console.print(
                f"created alliance {alliance_id} at {client.address}: spec {spec_ref.sha256}, "
                f"initial model {model_ref.sha256}"
            )


@app.command()
def join(
    alliance_id: int = typer.Argument(..., help="Alliance id"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Join an alliance (stake first: `covey stake add participant 100`)."""
    with open_context() as ctx:
        signer = ctx.signer(from_)
        receipt = alliance_client(ctx).join(alliance_id, signer)
        data = {"allianceId": alliance_id, "member": signer.address, "tx": receipt["transactionHash"].hex()}
        if as_json:
            print_json(data)
        else:
            console.print(f"{signer.address} joined alliance {alliance_id} (tx {data['tx']})")


@app.command()
def run(
    dataset: str = typer.Option("breast_cancer", help=f"Data the members hold privately: {DATASETS}."),
    members: int = typer.Option(5, help="Members (hospitals), including attackers."),
    attacker: list[str] = typer.Option(
        ["sign_flip"],
        help="An attacker's behaviour (repeatable): sign_flip, scaled, gaussian_noise, free_rider, "
        "label_flip, lazy; pass --attacker none for an all-honest run.",
    ),
    rounds: int = typer.Option(3, help="Training rounds."),
    proposers: int = typer.Option(2, help="Proposers per round."),
    voters: int = typer.Option(3, help="Voters per round."),
    split: str = typer.Option("iid", help="How the data is shared out: iid or dirichlet."),
    alpha: float = typer.Option(0.5, help="Dirichlet concentration (small = more skewed)."),
    rule: str = typer.Option("covey_default", help="Aggregation rule."),
    phase: int = typer.Option(60, help="Seconds per phase; phases end early once everyone has acted."),
    dp_noise: float | None = typer.Option(
        None, help="Train with DP-SGD (opacus) at this noise multiplier; reports each member's (epsilon, delta)."
    ),
    in_process: bool = typer.Option(False, "--in-process", help="Run every member in this process instead."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a whole alliance on a local chain: each member a separate process holding only its own data."""
    from covey.alliance.runner import RunConfig

    attackers = [name for name in attacker if name != "none"]
    if len(attackers) >= members:
        raise ValidationError(f"{len(attackers)} attackers leave no honest member among {members}")
    if split not in ("iid", "dirichlet"):
        raise ValidationError(f"split must be iid or dirichlet, got {split!r}")
    config = RunConfig(
        dataset=dataset,
        behaviours=tuple(["honest"] * (members - len(attackers)) + attackers),
        split=split,  # type: ignore[arg-type]
        alpha=alpha,
        rounds=rounds,
        proposers=proposers,
        voters=voters,
        rule=rule,
        phase_s=phase,
        dp_noise_multiplier=dp_noise,
    )
    result = _run_with_progress(config, in_process=in_process, quiet=as_json)
    if as_json:
        print_json(result.to_json())
        return
    _print_run(result)


@app.command()
def status(
    alliance_id: int = typer.Argument(..., help="Alliance id"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show an alliance: parameters, phase, global model, and every round's tally and settlement."""
    with open_context() as ctx:
        data = status_report(alliance_client(ctx), alliance_id)
    if as_json:
        print_json(data)
        return
    console.print(
        f"alliance {alliance_id}: phase {data['phase']}, round {data['currentRound']} of {data['rounds']} "
        f"(+ closing), {data['memberCount']} members, pool {format_units(data['rewardPool'])} COV, "
        f"rule {data['rule']}"
    )
    console.print(f"global model {data['globalModel']} (after round {data['globalModelRound']})")
    rows = [
        (
            r["round"],
            len(r["proposers"]),
            len(r["voters"]),
            r["accepted"],
            r["rejected"],
            "yes" if r["modelConfirmed"] else "no",
            format_units(r["paid"]),
            format_units(r["slashed"]),
        )
        for r in data["roundsPlayed"]
    ]
    columns = ["round", "proposers", "voters", "accepted", "rejected", "model confirmed", "paid COV", "slashed COV"]
    console.print(table("Rounds", columns, rows))


def status_report(client: AllianceClient, alliance_id: int) -> dict[str, Any]:
    """An alliance and its rounds as plain data (token units, hashes as hex)."""
    from covey.alliance.rules import rule_name

    info = client.alliance(alliance_id)
    model_hash, model_round = client.global_model(alliance_id)
    rounds = []
    for number in range(1, info.current_round + 1):
        round_info = client.round(alliance_id, number)
        proposers, voters = client.committee(alliance_id, number)
        rounds.append(
            {
                "round": number,
                "proposers": proposers,
                "voters": voters,
                "accepted": bin(round_info.accepted_mask).count("1"),
                "rejected": bin(round_info.rejected_mask).count("1"),
                "finalized": round_info.finalized,
                "modelConfirmed": round_info.model_confirmed,
                "paid": round_info.proposer_paid + round_info.voter_paid,
                "slashed": round_info.slashed,
            }
        )
    return {
        "allianceId": alliance_id,
        "address": client.address,
        "phase": client.phase(alliance_id).name.lower(),
        "creator": info.creator,
        "rounds": info.rounds,
        "currentRound": info.current_round,
        "memberCount": info.member_count,
        "members": client.members(alliance_id),
        "rewardPool": info.reward_pool,
        "minStake": info.min_stake,
        "penalty": info.penalty,
        "rule": rule_name(info.aggregation_rule),
        "spec": "0x" + info.spec_hash.hex(),
        "globalModel": "0x" + model_hash.hex(),
        "globalModelRound": model_round,
        "totalPaid": info.total_paid,
        "totalSlashed": info.total_slashed,
        "roundsPlayed": rounds,
    }


def _run_with_progress(config: Any, *, in_process: bool, quiet: bool) -> AllianceRun:
    """Run the alliance with a progress bar per round (phases as steps), unless `quiet`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from covey.alliance.client import Phase
    from covey.alliance.runner import run_in_process, run_processes
    from covey.config import get_settings

    steps = {Phase.PROPOSING: 1, Phase.COMMITTING: 2, Phase.REVEALING: 3, Phase.FINALISABLE: 4}
    progress = Progress(
        TextColumn("round {task.fields[round]}"),
        BarColumn(),
        TextColumn("{task.fields[phase]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    tasks: dict[int, Any] = {}

    def on_phase(round_number: int, phase: Phase) -> None:
        if round_number not in tasks:
            tasks[round_number] = progress.add_task("", total=5, round=round_number, phase="drawing committee")
        progress.update(tasks[round_number], completed=steps.get(phase, 0), phase=phase.name.lower())

    def on_round(report: Any) -> None:
        accuracy = "closing round" if report.accuracy is None else f"accuracy {report.accuracy:.1%}"
        progress.update(tasks[report.round], completed=5, phase=f"done: {accuracy}")

    settings = get_settings()
    with progress:
        if not in_process:
            return run_processes(config, settings, on_round=on_round, on_phase=on_phase)
        with open_context() as ctx:
            from covey.chain.chain import dev_accounts

            client = alliance_client(ctx)
            from covey.storage import open_store

            store = open_store(settings.store_url, settings.data_dir)
            staking = ctx.deployment.address("Staking")
            result, _ = run_in_process(
                ctx.chain, client, staking, store, config, dev_accounts(1)[0], on_round=on_round, on_phase=on_phase
            )
            return result


def _print_run(result: AllianceRun) -> None:
    rows = [
        (
            r.round,
            ", ".join(a[:10] for a in r.accepted) or "-",
            ", ".join(a[:10] for a in r.rejected) or "-",
            "-" if r.accuracy is None else f"{r.accuracy:.1%}",
            format_units(sum(r.rewards.values())),
            format_units(sum(r.slashes.values())),
            f"{r.seconds:.1f}",
        )
        for r in result.rounds
    ]
    columns = ["round", "accepted", "rejected", "accuracy", "paid COV", "slashed COV", "seconds"]
    console.print(table(f"Alliance {result.alliance_id}", columns, rows))
    members = [
        (
            m.address[:10],
            m.behaviour,
            format_units(m.stake_before),
            format_units(m.stake_after),
            format_units(m.rewarded),
            format_units(m.slashed),
        )
        for m in result.members
    ]
    console.print(table("Members", ["member", "plays", "stake before", "stake after", "rewarded", "slashed"], members))
    console.print(f"accuracy {result.initial_accuracy:.1%} -> {result.final_accuracy:.1%}")
    for member in result.members:
        if member.privacy_spent:
            epsilon, delta = member.privacy_spent[-1]
            console.print(f"{member.address[:10]} spent epsilon {epsilon:.2f} at delta {delta:g} (DP-SGD)")
