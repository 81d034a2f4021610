"""`covey node run`: a long-lived Arena node that watches the chain and acts in every phase on its own."""

from __future__ import annotations

import typer

from covey.cli._context import open_context
from covey.cli._output import console, print_json, table
from covey.cli.arena_cmd import (
    FROM_OPTION,
    JSON_OPTION,
    arena_client,
    build_rental,
    hyperparams,
    node_kwargs,
    stop_on_signals,
)
from covey.errors import ValidationError

app = typer.Typer(
    help="Long-running nodes: trainers and validators that act on chain events by themselves.", no_args_is_help=True
)

ADVERSARIES = {"trainer": ("junk", "replay"), "validator": ("lazy",)}


@app.command()
def run(
    role: str = typer.Option(..., "--role", help="trainer or validator"),
    task: list[int] = typer.Option([], "--task", help="Only these task ids (repeatable); default every task."),
    max_tasks: int | None = typer.Option(None, "--max-tasks", help="Exit after this many tasks are done."),
    once: bool = typer.Option(False, "--once", help="Make one pass over the tasks and exit."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between looks at the chain."),
    epochs: int | None = typer.Option(None, help="Trainer: epochs (default: each task's hint)."),
    lr: float | None = typer.Option(None, help="Trainer: learning rate."),
    batch_size: int | None = typer.Option(None, help="Trainer: batch size."),
    arch: list[str] = typer.Option([], "--arch", help="Trainer: architecture override key=value (repeatable)."),
    seed: int | None = typer.Option(None, help="Trainer: training seed (default: from the address)."),
    threads: int = typer.Option(1, help="Torch threads for training or scoring."),
    adversary: str | None = typer.Option(None, help="Misbehave on purpose, for demos: junk, replay (trainer), lazy."),
    rent: bool = typer.Option(False, "--rent", help="Trainer: rent a compute-market provider for every task."),
    max_price: str = typer.Option("0.0001", "--max-price", help="With --rent: most USD paid per unit-second."),
    units: int = typer.Option(1, "--units", min=1, help="With --rent: seeds trained per task; best is submitted."),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a trainer or validator node until stopped (SIGTERM/Ctrl-C), --max-tasks are done, or --once."""
    from covey.arena import NodeRunner, TrainerNode, ValidatorNode
    from covey.arena.adversaries import JunkTrainer, LazyValidator, ReplayCopycat
    from covey.arena.base import NodeBase

    role = role.strip().lower()
    if role not in ADVERSARIES:
        raise ValidationError(f"unknown node role {role!r}: choose trainer or validator")
    if adversary is not None and adversary not in ADVERSARIES[role]:
        raise ValidationError(f"a {role} cannot be a {adversary!r} adversary: choose {', '.join(ADVERSARIES[role])}")
    if rent and (role != "trainer" or adversary is not None):
        raise ValidationError("--rent is for honest trainer nodes")
    with open_context() as ctx:
        client = arena_client(ctx)
        account = ctx.signer(from_)
        parts = {**node_kwargs(ctx, as_json), "progress": False}
        node: NodeBase
        if role == "trainer":
            trainer_class = {None: TrainerNode, "junk": JunkTrainer, "replay": ReplayCopycat}[adversary]
            params = hyperparams(epochs, lr, batch_size, arch, seed, threads)
            rental = build_rental(ctx, max_price, units, 60, 1, 2048, 10, "15m") if rent else None
            node = trainer_class(client, account, hyperparams=params, rental=rental, **parts)
        else:
            validator_class = LazyValidator if adversary == "lazy" else ValidatorNode
            node = validator_class(client, account, num_threads=threads, **parts)
        runner = NodeRunner(node, task_ids=task or None, max_tasks=max_tasks, once=once, poll_s=poll)
        node.log(f"{role} node {account.address} watching chain {ctx.chain.chain_id} (Arena {client.address})")
        with stop_on_signals(runner):
            summary = runner.run()
        data = {
            "role": role,
            "account": account.address,
            "seconds": round(summary.seconds, 1),
            "stoppedBy": summary.stopped_by,
            "tasks": {str(task_id): outcome for task_id, outcome in summary.finished.items()},
        }
        if as_json:
            print_json(data)
            return
        console.print(f"{role} node {account.address} stopped: {summary.stopped_by} after {data['seconds']}s")
        console.print(table("Tasks", ["task", "outcome"], sorted(summary.finished.items())))
