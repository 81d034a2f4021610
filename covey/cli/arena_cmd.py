"""`covey arena ...`: post tasks, train and validate as a one-shot node, finalize, read the leaderboard."""

from __future__ import annotations

import json
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from covey.cli._context import Context, open_context
from covey.cli._output import console, error_console, format_units, parse_amount, print_json, table
from covey.errors import CoveyError, ValidationError

if TYPE_CHECKING:
    from covey.arena import ArenaClient, NodeRunner
    from covey.arena.trainer import Hyperparams
    from covey.compute.rental import Rental

app = typer.Typer(
    help="Arena: task market for models (create, train, validate, finalize, leaderboard).", no_args_is_help=True
)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
FROM_OPTION = typer.Option(
    None, "--from", help="Signing account (wallet name, address or dev0..dev9); default COVEY_KEY."
)
TASK_OPTION = typer.Option(..., "--task", help="Task id.")
WAIT_OPTION = typer.Option(True, "--wait/--no-wait", help="Keep going through the phases, or act once and return.")
POLL_OPTION = typer.Option(1.0, "--poll", help="Seconds between looks at the chain while waiting.")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration(text: str, *, what: str = "duration") -> int:
    """Seconds from "90", "90s", "10m", "2h" or "1d"; anything else is a `ValidationError`."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValidationError(f"malformed {what} {text!r}: try 90s, 10m, 2h or 1d")
    return int(match.group(1)) * _UNITS_S[match.group(2)]


def parse_architecture(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (values as JSON, else strings), e.g. `hidden_sizes=[64,32]`."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"malformed --arch {item!r}: expected key=value, e.g. hidden_sizes=[64,32]")
        try:
            result[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[key.strip()] = raw
    return result


def hyperparams(
    epochs: int | None, lr: float | None, batch_size: int | None, arch: list[str], seed: int | None, threads: int
) -> Hyperparams:
    from covey.arena.trainer import Hyperparams

    return Hyperparams(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        architecture=parse_architecture(arch),
        seed=seed,
        num_threads=threads,
    )


def arena_client(ctx: Context) -> ArenaClient:
    from covey.arena import ArenaClient

    return ArenaClient.from_deployment(ctx.chain, ctx.deployment)


def node_kwargs(ctx: Context, as_json: bool) -> dict[str, Any]:
    """What every node needs besides its account: the store, the data directory and a log."""
    from covey.storage import open_store

    out = error_console if as_json else console  # keep stdout clean for the JSON

    return {
        "store": open_store(ctx.settings.store_url, ctx.settings.data_dir),
        "home": ctx.settings.data_dir,
        "log": lambda line: out.print(line, markup=False, highlight=False),
        "progress": not as_json,
    }


@contextmanager
def stop_on_signals(runner: NodeRunner) -> Iterator[None]:
    """SIGTERM or Ctrl-C ends the run after the current step; a second one stops at once."""

    def handle(signum: int, _frame: object) -> None:
        if runner.stopping:
            raise KeyboardInterrupt
        runner.stop(f"signal {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- the creator ----------------------------------------------------------------------------------------


@app.command("create-task")
def create_task(
    dataset: str = typer.Option("digits", help="A packaged dataset: digits, mnist, breast_cancer, shakespeare."),
    spec_file: Path | None = typer.Option(None, "--spec", help="A TaskSpec JSON file (instead of --dataset)."),
    reward: str = typer.Option("100", help="COV in the reward pool (approved and paid now)."),
    top_k: int = typer.Option(3, "--top-k", help="How many trainers are paid."),
    min_trainer_stake: str = typer.Option("10", help="COV of trainer stake needed to submit."),
    min_validator_stake: str = typer.Option("10", help="COV of validator stake needed to score."),
    baseline: float | None = typer.Option(None, help="Junk threshold in metric units (default: the spec's)."),
    tolerance: float = typer.Option(0.02, help="Mean deviation from consensus at which a validator earns nothing."),
    submit: str = typer.Option("10m", help="How long trainers may commit."),
    reveal: str = typer.Option("10m", help="How long trainers may reveal after that."),
    score: str = typer.Option("10m", help="How long validators may commit scores after that."),
    score_reveal: str = typer.Option("10m", help="How long validators may reveal scores after that."),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Post a task: upload its manifest and public training data, keep the validators' key, fund the pool."""
    from covey.arena import Deadlines, post_task
    from covey.ml import TaskSpec, default_spec

    spec = TaskSpec.from_bytes(spec_file.read_bytes()) if spec_file else default_spec(dataset)
    pool = parse_amount(reward, what="reward")
    trainer_stake = _amount_or_zero(min_trainer_stake, "minimum trainer stake")
    validator_stake = _amount_or_zero(min_validator_stake, "minimum validator stake")
    phases = [
        parse_duration(value, what=name)
        for name, value in (
            ("--submit", submit),
            ("--reveal", reveal),
            ("--score", score),
            ("--score-reveal", score_reveal),
        )
    ]
    with open_context() as ctx:
        client = arena_client(ctx)
        parts = node_kwargs(ctx, as_json)
        posted = post_task(
            client,
            ctx.signer(from_),
            parts["store"],
            parts["home"],
            spec,
            reward_pool=pool,
            deadlines=Deadlines.after(client.now(), *phases),
            top_k=top_k,
            min_trainer_stake=trainer_stake,
            min_validator_stake=validator_stake,
            tolerance=tolerance,
            baseline=baseline,
        )
        data: dict[str, Any] = {
            "taskId": posted.task_id,
            "specHash": posted.manifest.spec_hash.hex(),
            "dataset": spec.dataset,
            "metric": spec.metric,
            "rewardPool": pool,
            "trainExamples": posted.manifest.train_examples,
            "validationExamples": posted.manifest.validation_examples,
            "validationKey": str(posted.key_path),
        }
        if as_json:
            print_json(data)
            return
        console.print(
            f"task [bold]{posted.task_id}[/]: {spec.dataset} / {spec.family} / {spec.metric}, "
            f"pool {format_units(pool)} COV, spec {data['specHash'][:16]}…"
        )
        console.print(
            f"validation key: {posted.key_path}\n"
            "hand this file to your validators only (they pass it with --key); trainers never need it"
        )


def _amount_or_zero(text: str, what: str) -> int:
    """COV units from a decimal string, where (unlike `parse_amount`) zero is allowed: no minimum stake."""
    try:
        if Decimal(text.strip()) == 0:
            return 0
    except InvalidOperation:
        pass  # parse_amount explains what is wrong
    return parse_amount(text, what=what)


# -- reading ----------------------------------------------------------------------------------------------


@app.command()
def tasks(as_json: bool = JSON_OPTION) -> None:
    """List every task with its phase, pool, submissions and validators."""
    from covey.arena.manifest import fetch_manifest
    from covey.errors import CoveyError
    from covey.storage import open_store

    with open_context() as ctx:
        client = arena_client(ctx)
        store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
        now = client.now()
        rows: list[dict[str, Any]] = []
        for task_id in range(1, client.task_count() + 1):
            task = client.task(task_id)
            try:
                spec = fetch_manifest(store, task.spec_hash).spec
                what = f"{spec.dataset}/{spec.family}/{spec.metric}"
            except CoveyError:
                what = "(manifest not in this store)"
            deadline = task.next_deadline(now)
            rows.append(
                {
                    "taskId": task_id,
                    "task": what,
                    "phase": task.phase_at(now).label,
                    "rewardPool": task.reward_pool,
                    "submissions": task.submission_count,
                    "revealed": task.revealed_count,
                    "validators": task.validator_count,
                    "validatorsRevealed": task.revealed_validator_count,
                    "nextDeadlineIn": None if deadline is None else deadline - now,
                    "creator": task.creator,
                }
            )
        if as_json:
            print_json(rows)
            return
        console.print(
            table(
                "Arena tasks",
                ["id", "task", "phase", "pool COV", "subs (revealed)", "validators (revealed)", "next deadline in"],
                [
                    (
                        row["taskId"],
                        row["task"],
                        row["phase"],
                        format_units(row["rewardPool"]),
                        f"{row['submissions']} ({row['revealed']})",
                        f"{row['validators']} ({row['validatorsRevealed']})",
                        "-" if row["nextDeadlineIn"] is None else f"{row['nextDeadlineIn']}s",
                    )
                    for row in rows
                ],
            )
        )


@app.command()
def leaderboard(task: int = TASK_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Ranks, consensus scores, payouts and slashes (predicted from revealed scores until finalised)."""
    from covey.arena import task_report

    with open_context() as ctx:
        report = task_report(arena_client(ctx), task)
        if as_json:
            print_json(report)
            return
        state = "final" if report["settled"] else f"predicted ({report['phase']})"
        console.print(
            table(
                f"Task {task} leaderboard, {state}; baseline {report['baselineScore']}",
                ["rank", "trainer", "consensus", "eligible", "payout COV", "slashed COV"],
                [
                    (
                        row["rank"] or "-",
                        row["trainer"],
                        f"{row['score']:.4f}" if row["revealed"] else "not revealed",
                        "yes" if row["eligible"] else "no",
                        format_units(row["payout"]),
                        format_units(row["slashed"]),
                    )
                    for row in report["submissions"]
                ],
            )
        )
        console.print(
            table(
                f"Task {task} validators; tolerance {report['tolerance']}",
                ["validator", "weight COV", "revealed", "mean deviation", "payout COV", "slashed COV"],
                [
                    (
                        row["validator"],
                        format_units(row["weight"]),
                        "yes" if row["revealed"] else "no",
                        f"{row['meanDeviationScore']:.4f}",
                        format_units(row["payout"]),
                        format_units(row["slashed"]),
                    )
                    for row in report["validators"]
                ],
            )
        )
        if report["winner"]:
            console.print(f"winner: {report['winner']}")


# -- acting -----------------------------------------------------------------------------------------------


@app.command()
def train(
    task: int = TASK_OPTION,
    epochs: int | None = typer.Option(None, help="Epochs (default: the task's hint)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: the task's hint)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the task's hint)."),
    arch: list[str] = typer.Option([], "--arch", help="Architecture override key=value, e.g. hidden_sizes=[64]."),
    seed: int | None = typer.Option(None, help="Training seed (default: derived from your address)."),
    threads: int = typer.Option(1, help="Torch threads for training."),
    rent: bool = typer.Option(False, "--rent", help="Rent a compute-market provider to train instead of this machine."),
    max_price: str = typer.Option(
        "0.0001", "--max-price", help="With --rent: most you pay per unit-second, in USD (escrowed up front)."
    ),
    units: int = typer.Option(
        1, "--units", min=1, help="With --rent: seeds to train, one unit each; best is submitted."
    ),
    seconds_per_unit: int = typer.Option(60, "--seconds-per-unit", min=1, help="With --rent: seconds billed per unit."),
    cpu: int = typer.Option(1, "--cpu", min=1, help="With --rent: CPU cores a unit needs."),
    memory_mb: int = typer.Option(2048, "--memory-mb", min=64, help="With --rent: memory a unit needs, MiB."),
    bid_window: int = typer.Option(10, "--bid-window", min=1, help="With --rent: seconds providers may bid."),
    rent_timeout: str = typer.Option("15m", "--rent-timeout", help="With --rent: how long to wait for the weights."),
    wait: bool = WAIT_OPTION,
    poll: float = POLL_OPTION,
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train for a task and commit; with --wait (default) stay until the reveal window opens and reveal.

    With --rent a compute-market provider trains instead (you pay in USD); the rented weights are committed
    and revealed exactly like your own.
    """
    from covey.arena import NodeRunner, TrainerNode

    with open_context() as ctx:
        account = ctx.signer(from_)
        rental = (
            build_rental(ctx, max_price, units, seconds_per_unit, cpu, memory_mb, bid_window, rent_timeout)
            if rent
            else None
        )
        node = TrainerNode(
            arena_client(ctx),
            account,
            hyperparams=hyperparams(epochs, lr, batch_size, arch, seed, threads),
            rental=rental,
            **node_kwargs(ctx, as_json),
        )

        def done() -> bool:
            return node.done_submitting(task) or task in node.rental_failures

        runner = NodeRunner(node, task_ids=[task], once=not wait, poll_s=poll, until=done)
        with stop_on_signals(runner):
            runner.run()
        if task in node.rental_failures:
            raise CoveyError(node.rental_failures[task])
        _print_record(node, task, as_json)


def build_rental(
    ctx: Context,
    max_price: str,
    units: int,
    seconds_per_unit: int,
    cpu: int,
    memory_mb: int,
    bid_window: int,
    timeout: str,
) -> Rental:
    """The compute market's `Rental`: the training backend a trainer node rents through with `--rent`."""
    from covey.cli._output import USD_DECIMALS
    from covey.cli.market_cmd import market_client
    from covey.compute.rental import Rental
    from covey.compute.resources import Resources

    return Rental(
        market=market_client(ctx),
        max_price_per_unit_second=parse_amount(max_price, USD_DECIMALS, what="max price"),
        units=units,
        seconds_per_unit=seconds_per_unit,
        needs=Resources(cpu, memory_mb, 0),
        bid_window_s=bid_window,
        timeout_s=parse_duration(timeout, what="--rent-timeout"),
    )


@app.command()
def validate(
    task: int = TASK_OPTION,
    key: Path | None = typer.Option(None, "--key", help="The task's validation key file from its creator."),
    threads: int = typer.Option(1, help="Torch threads for scoring."),
    wait: bool = WAIT_OPTION,
    poll: float = POLL_OPTION,
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Score a task's revealed submissions on the held-out split and commit; with --wait also reveal."""
    from covey.arena import NodeRunner, ValidatorNode

    with open_context() as ctx:
        client = arena_client(ctx)
        parts = node_kwargs(ctx, as_json)
        if key is not None:
            import_key(client, parts["store"], parts["home"], task, key)
        node = ValidatorNode(client, ctx.signer(from_), num_threads=threads, **parts)
        runner = NodeRunner(
            node,
            task_ids=[task],
            once=not wait,
            poll_s=poll,
            until=lambda: node.done_scoring(task),
        )
        with stop_on_signals(runner):
            runner.run()
        _print_record(node, task, as_json)


def import_key(client: ArenaClient, store: Any, home: Path, task_id: int, source: Path) -> Path:
    """Check a validation key file against the task's manifest and copy it into COVEY_HOME/arena/keys."""
    from covey.arena.manifest import ValidationKey, fetch_manifest, key_path, keys_dir

    spec_hash = client.task(task_id).spec_hash
    manifest = fetch_manifest(store, spec_hash)
    if ValidationKey.from_bytes(source.read_bytes()).commitment != manifest.validation_commitment:
        raise ValidationError(f"{source} is not the validation key of task {task_id}")
    target = key_path(home, spec_hash)
    keys_dir(home)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
        target.chmod(0o600)
    return target


@app.command()
def finalize(task: int = TASK_OPTION, from_: str | None = FROM_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Settle a task after its score-reveal deadline: pay, slash, and refund the rest to the creator."""
    with open_context() as ctx:
        client = arena_client(ctx)
        receipt = client.finalize(ctx.signer(from_), task)
        info = client.task(task)
        winner = client.consensus_model(task)
        data = {
            "taskId": task,
            "tx": receipt["transactionHash"].hex(),
            "gasUsed": receipt["gasUsed"],
            "winner": winner.trainer if winner else None,
            "trainerPaid": info.trainer_paid,
            "validatorPaid": info.validator_paid,
            "refunded": info.refunded,
        }
        if as_json:
            print_json(data)
            return
        console.print(
            f"task {task} finalised: winner {data['winner'] or 'none'}, trainers paid "
            f"{format_units(info.trainer_paid)} COV, validators {format_units(info.validator_paid)} COV, "
            f"refunded {format_units(info.refunded)} COV (gas {receipt['gasUsed']})"
        )


def _print_record(node: Any, task_id: int, as_json: bool) -> None:
    record = node.state.load(task_id)
    data = {
        "taskId": task_id,
        "role": node.role,
        "account": node.address,
        "committed": record.committed,
        "revealed": record.revealed,
        "weightsHash": record.weights_hash or None,
        "scores": record.scores or None,
        "notes": record.notes or None,
        "gaveUp": record.gave_up or None,
    }
    if as_json:
        print_json(data)
        return
    state = "revealed" if record.revealed else "committed" if record.committed else "nothing sent"
    console.print(
        f"{node.role} {node.address} on task {task_id}: {state}"
        + (f" (gave up: {record.gave_up})" if record.gave_up else "")
    )
