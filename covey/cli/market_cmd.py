"""`covey market ...`: the compute market from a buyer's and a bidder's seat: offers, post, jobs, bid, status, results.

Prices are USD per unit-second as decimals (`0.00002` = 20 µUSD); a job's escrow is
max price x units x seconds per unit. Jobs posted with `--train` or `--command` seal their outputs to the
poster's key (`--no-seal` to publish them readable by anyone); `covey market results` fetches and opens them.
`covey market algorithm` prints the code hash a data owner approves for compute-to-data.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pydantic
import typer

from covey.cli._context import Context, open_context
from covey.cli._output import COV_DECIMALS, USD_DECIMALS, console, format_units, parse_amount, print_json, table
from covey.compute.client import Job, JobStatus, JobTerms, MarketClient, Resources, delivered_units, job_lineage
from covey.compute.errors import SealError
from covey.compute.sealing import recipient_of, sealing_key, unit_context, unseal
from covey.compute.specs import CommandJob, TrainingJob, TrainUnit, UnitLimits, fetch_job, parse_job, publish_job
from covey.compute.units import fetch_result
from covey.errors import ChainError, ValidationError
from covey.storage import ArtifactStore, open_store, parse_digest

app = typer.Typer(help="Compute market: offers, post a job, list jobs, bid, job status, results.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
FROM_OPTION = typer.Option(
    None, "--from", help="Signing account (wallet name, address or dev0..dev9); default COVEY_KEY."
)
ZERO_ADDRESS = "0x" + "00" * 20


def market_client(ctx: Context) -> MarketClient:
    """The Market of this chain's deployment (or, for an older manifest, the one its Registry names)."""
    address = ctx.deployment.contracts.get("Market")
    if address is None:
        registry = ctx.deployment.contract(ctx.chain, "Registry")
        address = str(registry.functions.get("Market").call())
        if address == ZERO_ADDRESS:
            raise ChainError(f"no compute Market on chain {ctx.chain.chain_id}: deploy a suite that includes it")
    return MarketClient.from_deployment(ctx.chain, ctx.deployment, address)


def store_of(ctx: Context) -> ArtifactStore:
    return open_store(ctx.settings.store_url, ctx.settings.data_dir)


def usd_price(units: int) -> str:
    """µUSD per unit-second as a USD decimal."""
    return format_units(units, USD_DECIMALS, places=6)


# -- commands ---------------------------------------------------------------------------------------------


@app.command()
def offers(
    include_retired: bool = typer.Option(False, "--all", help="Include retired offers."), as_json: bool = JSON_OPTION
) -> None:
    """List providers' offers: capacity, price and stake."""
    with open_context() as ctx:
        client = market_client(ctx)
        rows: list[dict[str, Any]] = [
            {
                "provider": offer.provider,
                "cpuCores": offer.resources.cpu_cores,
                "memoryMb": offer.resources.memory_mb,
                "gpus": offer.resources.gpus,
                "pricePerUnitSecond": offer.price_per_unit_second,
                "stake": client.provider_stake(offer.provider),
                "active": offer.active,
            }
            for offer in client.offers(active_only=not include_retired)
        ]
        if as_json:
            print_json(rows)
            return
        console.print(
            table(
                "Compute offers",
                ["provider", "CPU", "MiB", "GPU", "USD / unit-s", "stake COV", "active"],
                [
                    (
                        r["provider"],
                        r["cpuCores"],
                        r["memoryMb"],
                        r["gpus"],
                        usd_price(r["pricePerUnitSecond"]),
                        format_units(r["stake"], COV_DECIMALS),
                        "yes" if r["active"] else "no",
                    )
                    for r in rows
                ],
            )
        )


@app.command()
def post(
    max_price: str = typer.Option(..., "--max-price", help="Most you pay per unit-second, in USD (e.g. 0.00002)."),
    job_file: Path | None = typer.Option(None, "--job", help="A job spec JSON file (training or command job)."),
    train_task: str | None = typer.Option(None, "--train", help="Train this task spec digest, one unit per seed."),
    seeds: str = typer.Option("0", help="Comma-separated seeds for --train (one unit each)."),
    lr: float | None = typer.Option(None, help="Learning rate for --train (default: the task's hint)."),
    epochs: int | None = typer.Option(None, help="Epochs for --train."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimiser steps cap for --train."),
    command: str | None = typer.Option(None, "--command", help='A command job, e.g. "python prog.py {unit}".'),
    inputs: list[str] = typer.Option([], "--input", help="NAME=FILE or NAME=DIGEST, for --command (repeat)."),
    outputs: list[str] = typer.Option([], "--output", help="A declared output file name, for --command (repeat)."),
    units: int = typer.Option(1, help="Units of a --command job."),
    network: bool = typer.Option(
        False, help="A --command job that needs the network (only providers with a network premium take it)."
    ),
    seal: bool = typer.Option(
        True, help="Seal --train/--command outputs to your key, so only you can read them (`market results`)."
    ),
    seconds_per_unit: int = typer.Option(60, "--seconds-per-unit", help="Seconds one unit is billed for."),
    cpu: int = typer.Option(1, help="CPU cores a unit needs."),
    memory_mb: int = typer.Option(1024, "--memory-mb", help="Memory a unit needs, MiB."),
    gpus: int = typer.Option(0, help="GPUs a unit needs."),
    bid_window: int = typer.Option(30, "--bid-window", help="Seconds providers may bid."),
    heartbeat: int = typer.Option(60, help="Longest provider silence allowed, seconds."),
    reserve: bool = typer.Option(True, help="Also allow the Market to re-escrow the job once if a provider fails."),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a job spec to the store and post it with escrow (refused if your balance is short)."""
    price = parse_amount(max_price, USD_DECIMALS, what="max price")
    with open_context() as ctx:
        store = store_of(ctx)
        signer = ctx.signer(from_)
        job = _job_from_options(
            store, job_file, train_task, seeds, lr, epochs, max_steps, command, inputs, outputs, units, network
        )
        if seal and job_file is None:
            job = job.model_copy(update={"sealed_to": recipient_of(signer.key)})
        spec_ref = publish_job(store, job)
        terms = JobTerms(
            spec_ref.bytes32,
            job.unit_count,
            price,
            seconds_per_unit,
            Resources(cpu, memory_mb, gpus),
            bid_window,
            heartbeat,
        )
        job_id = market_client(ctx).post_job(signer, terms, extra_allowance=terms.escrow if reserve else 0)
        data = {
            "jobId": job_id,
            "spec": spec_ref.digest,
            "kind": job.kind,
            "units": job.unit_count,
            "escrow": terms.escrow,
            "maxPricePerUnitSecond": price,
            "sealed": job.sealed_to is not None,
        }
        if as_json:
            print_json(data)
        else:
            console.print(
                f"posted job {job_id} ({job.kind}, {job.unit_count} units, spec {spec_ref.digest[:12]}…); "
                f"escrow {format_units(terms.escrow, USD_DECIMALS, places=6)} USD"
            )


@app.command()
def jobs(
    status: str | None = typer.Option(None, help="Only jobs in this state (open, running, verifying, settled...)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List jobs with their state, provider, price and escrow."""
    wanted = {_parse_status(status)} if status else None
    with open_context() as ctx:
        found = market_client(ctx).jobs(statuses=wanted)
        rows = [_job_summary(job) for job in found]
        if as_json:
            print_json(rows)
            return
        console.print(
            table(
                "Compute jobs",
                ["id", "status", "units", "done", "max USD/unit-s", "provider", "price", "escrow USD"],
                [
                    (
                        r["jobId"],
                        r["status"],
                        r["units"],
                        r["committedUnits"],
                        usd_price(r["maxPricePerUnitSecond"]),
                        r["provider"] or "-",
                        usd_price(r["pricePerUnitSecond"]),
                        format_units(r["escrow"], USD_DECIMALS, 6),
                    )
                    for r in rows
                ],
            )
        )


@app.command()
def bid(
    job_id: int = typer.Argument(..., help="The job to bid on."),
    price: str = typer.Argument(..., help="Your price per unit-second in USD (e.g. 0.00001)."),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Bid on an open job (your offer must fit its needs and your provider stake must be enough)."""
    units = parse_amount(price, USD_DECIMALS, what="price")
    with open_context() as ctx:
        signer = ctx.signer(from_)
        receipt = market_client(ctx).bid(signer, job_id, units)
        data = {
            "jobId": job_id,
            "provider": signer.address,
            "pricePerUnitSecond": units,
            "tx": receipt["transactionHash"].hex(),
        }
        if as_json:
            print_json(data)
        else:
            console.print(f"bid {usd_price(units)} USD/unit-s on job {job_id} (tx {data['tx']})")


@app.command()
def status(job_id: int = typer.Argument(..., help="The job."), as_json: bool = JSON_OPTION) -> None:
    """Show a job: terms, bids, heartbeats, unit results, sample and verdicts, and any re-posts."""
    with open_context() as ctx:
        client = market_client(ctx)
        job = client.job(job_id)
        data: dict[str, Any] = _job_summary(job)
        data |= {
            "buyer": job.buyer,
            "spec": job.spec_digest,
            "needs": {"cpuCores": job.needs.cpu_cores, "memoryMb": job.needs.memory_mb, "gpus": job.needs.gpus},
            "secondsPerUnit": job.seconds_per_unit,
            "firstUnit": job.first_unit,
            "bidDeadline": job.bid_deadline,
            "lastHeartbeat": job.last_heartbeat,
            "heartbeatDeadline": job.heartbeat_deadline if job.status == JobStatus.RUNNING else None,
            "verifyDeadline": job.verify_deadline or None,
            "sampledUnits": job.sampled_units,
            "paid": job.paid,
            "refunded": job.refunded,
            "slashed": job.slashed,
            "parentJob": job.parent_job or None,
            "lineage": [j.job_id for j in job_lineage(client, job_id)],
            "bids": [
                {"provider": b.provider, "pricePerUnitSecond": b.price_per_unit_second, "stake": b.stake}
                for b in client.bids(job_id)
            ],
            "units": [
                {
                    "unit": r.unit,
                    "resultHash": r.result_hash.hex() if r.committed else None,
                    "sampled": r.sampled,
                    "verdict": r.verdict.name.lower(),
                }
                for r in client.unit_results(job_id)
            ],
        }
        if as_json:
            print_json(data)
            return
        console.print(
            f"[bold]job {job_id}[/] {data['status']} - {job.units} units x {job.seconds_per_unit}s, "
            f"buyer {job.buyer}, spec {job.spec_digest[:12]}…"
        )
        console.print(
            f"provider {data['provider'] or '-'} at {usd_price(job.price_per_unit_second)} USD/unit-s; "
            f"escrow {format_units(job.escrow, USD_DECIMALS, 6)}, paid {format_units(job.paid, 6, 6)}, "
            f"refunded {format_units(job.refunded, 6, 6)} USD; slashed "
            f"{format_units(job.slashed, COV_DECIMALS)} COV"
        )
        if data["bids"]:
            console.print(
                table(
                    "Bids",
                    ["provider", "USD / unit-s", "stake COV"],
                    [
                        (b["provider"], usd_price(b["pricePerUnitSecond"]), format_units(b["stake"]))
                        for b in data["bids"]
                    ],
                )
            )
        console.print(
            table(
                "Units",
                ["unit", "result", "sampled", "verdict"],
                [
                    (u["unit"], (u["resultHash"] or "-")[:16], "yes" if u["sampled"] else "", u["verdict"])
                    for u in data["units"]
                ],
            )
        )
        if len(data["lineage"]) > 1:
            console.print(f"work re-posted along jobs {' -> '.join(map(str, data['lineage']))}")


@app.command()
def results(
    job_id: int = typer.Argument(..., help="The job (its re-posts are followed)."),
    out: Path = typer.Option(Path("."), "--out", help="Folder to write unit-N/<output> files into."),
    verified_only: bool = typer.Option(False, "--verified-only", help="Only units of settled jobs."),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fetch a job's delivered outputs (hash-checked) and open sealed ones with your key."""
    with open_context() as ctx:
        client, store = market_client(ctx), store_of(ctx)
        spec_digest = client.job(job_id).spec_digest
        spec = fetch_job(store, spec_digest)
        key = sealing_key(ctx.signer(from_).key) if spec.sealed_to is not None else None
        written: list[dict[str, Any]] = []
        for unit, output in sorted(delivered_units(client, job_id, verified_only=verified_only).items()):
            manifest = fetch_result(store, output.result_hash)
            folder = out / f"unit-{unit}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, digest in sorted(manifest["outputs"].items()):
                data = store.get(digest)
                if key is not None:
                    try:
                        data = unseal(data, key, unit_context(spec_digest, unit, name))
                    except SealError as exc:
                        raise ValidationError(f"job {job_id} unit {unit} {name}: {exc}") from exc
                (folder / name).write_bytes(data)
                written.append({"unit": unit, "name": name, "path": str(folder / name), "bytes": len(data)})
            for name, why in {**manifest.get("withheld", {}), **manifest.get("rejected", {})}.items():
                written.append({"unit": unit, "name": name, "path": None, "withheld": why})
        if as_json:
            print_json({"jobId": job_id, "sealed": key is not None, "outputs": written})
            return
        for item in written:
            where = item["path"] or f"withheld: {item['withheld']}"
            console.print(f"unit {item['unit']} {item['name']}: {where}")
        if not written:
            console.print(f"job {job_id}: no unit delivered yet")


@app.command()
def algorithm(
    job_file: Path = typer.Option(..., "--job", help="A compute-to-data command job spec JSON file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print a compute-to-data job's algorithm digest: what a data owner approves (`provider run --approve`)."""
    from covey.compute.c2d import algorithm_digest  # numpy: only for this command

    if not job_file.is_file():
        raise ValidationError(f"no job spec file at {job_file}")
    job = parse_job(job_file.read_bytes())
    if not isinstance(job, CommandJob):
        raise ValidationError("only command jobs run next to private data; this is a training job")
    digest = algorithm_digest(job)
    if as_json:
        print_json({"algorithm": digest, "argv": job.argv, "inputs": job.inputs, "outputs": job.outputs})
    else:
        console.print(digest)


# -- helpers ----------------------------------------------------------------------------------------------


def _job_summary(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "status": job.status.label,
        "units": job.units,
        "committedUnits": job.committed_units,
        "maxPricePerUnitSecond": job.max_price_per_unit_second,
        "provider": None if job.provider == ZERO_ADDRESS else job.provider,
        "pricePerUnitSecond": job.price_per_unit_second,
        "escrow": job.escrow,
        "childJob": job.child_job or None,
    }


def _parse_status(text: str) -> JobStatus:
    try:
        return JobStatus[text.strip().upper()]
    except KeyError:
        choices = ", ".join(status.label for status in JobStatus)
        raise ValidationError(f"unknown job status {text!r}: choose one of {choices}") from None


def _job_from_options(
    store: ArtifactStore,
    job_file: Path | None,
    train_task: str | None,
    seeds: str,
    lr: float | None,
    epochs: int | None,
    max_steps: int | None,
    command: str | None,
    inputs: list[str],
    outputs: list[str],
    units: int,
    network: bool = False,
) -> TrainingJob | CommandJob:
    chosen = [name for name, value in (("--job", job_file), ("--train", train_task), ("--command", command)) if value]
    if len(chosen) != 1:
        raise ValidationError('give exactly one of --job FILE, --train TASK_DIGEST or --command "..."')
    if network and command is None:
        raise ValidationError("--network is for --command jobs (a --job file states `network` itself)")
    if job_file is not None:
        if not job_file.is_file():
            raise ValidationError(f"no job spec file at {job_file}")
        return parse_job(job_file.read_bytes())
    if train_task is not None:
        try:
            seed_list = [int(seed) for seed in seeds.split(",") if seed.strip()]
        except ValueError as exc:
            raise ValidationError(f"seeds must be integers separated by commas, got {seeds!r}") from exc
        return TrainingJob(
            task=parse_digest(train_task),
            units=[TrainUnit(seed=seed, lr=lr, epochs=epochs, max_steps=max_steps) for seed in seed_list],
        )
    assert command is not None
    declared: dict[str, str] = {}
    for item in inputs:
        name, sep, source = item.partition("=")
        if not sep or not name:
            raise ValidationError(f"--input takes NAME=FILE or NAME=DIGEST, got {item!r}")
        path = Path(source)
        declared[name] = store.put_file(path).digest if path.is_file() else parse_digest(source)
    if not outputs:
        raise ValidationError("a command job declares at least one --output")
    try:
        return CommandJob(
            argv=shlex.split(command),
            inputs=declared,
            outputs=outputs,
            units=units,
            limits=UnitLimits(),
            network=network,
        )
    except pydantic.ValidationError as exc:
        raise ValidationError(f"not a valid command job: {exc}") from exc
