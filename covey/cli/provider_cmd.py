"""`covey provider run`: offer this machine's capacity on the compute market and work the jobs it wins."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import cast

import typer
from eth_account.signers.local import LocalAccount

from covey.chain.roles import Role
from covey.cli._context import Context, open_context
from covey.cli._output import COV_DECIMALS, USD_DECIMALS, console, parse_amount, print_json
from covey.cli.market_cmd import market_client, store_of
from covey.compute.c2d import PrivateDataset
from covey.compute.client import MarketClient, Resources
from covey.compute.provider import PricingRule, ProviderAgent
from covey.compute.sandbox import IsolationMode, Sandbox
from covey.compute.verifier import VerifierAgent, render_check
from covey.errors import ValidationError
from covey.storage import parse_digest

app = typer.Typer(help="Compute provider: offer capacity, bid, run jobs in a sandbox, get paid.", no_args_is_help=True)


@app.callback()
def provider() -> None:
    """Compute provider: offer capacity, bid, run jobs in a sandbox, get paid."""


@app.command()
def run(
    price: str = typer.Option(..., help="Your floor price per unit-second in USD (e.g. 0.00001)."),
    cpu: int = typer.Option(1, help="CPU cores offered."),
    memory_mb: int = typer.Option(2048, "--memory-mb", help="Memory offered, MiB."),
    gpus: int = typer.Option(0, help="GPUs offered."),
    undercut: bool = typer.Option(False, help="Bid just under the cheapest bid so far (never under --price)."),
    stake: str | None = typer.Option(None, help="Stake this much COV for the provider role first, if below it."),
    data: list[Path] = typer.Option([], "--data", help="A private .npz data set to offer for compute-to-data."),
    approve: list[str] = typer.Option(
        [],
        "--approve",
        help="An algorithm digest (`covey market algorithm`) allowed to run on the --data sets, optionally "
        "DIGEST:MAX_OUTPUT_BYTES (default: an aggregate-sized cap). Repeat; without any, no job runs on the data.",
    ),
    network_premium: str | None = typer.Option(
        None,
        "--network-premium",
        help="Also take jobs that need the network, at this many USD per unit-second above --price. Such units "
        "share this machine's network, loopback included: keep no private service (a chain RPC) listening here.",
    ),
    isolation: str = typer.Option(
        "auto", help="Unit isolation: auto (namespaces where available), namespaces (required) or process."
    ),
    verify: bool = typer.Option(False, help="Also verify sampled units (as a registered verifier or buyer)."),
    workdir: Path | None = typer.Option(None, help="Where units run (default: COVEY_HOME/compute/sandbox)."),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help="Exit after finishing this many jobs."),
    poll: float = typer.Option(1.0, help="Seconds between looks at the market."),
    from_: str | None = typer.Option(None, "--from", help="Signing account; default COVEY_KEY."),
    as_json: bool = typer.Option(False, "--json", help="Print log lines and the final summary as JSON."),
) -> None:
    """Register an offer, bid on jobs that fit, run won units in the sandbox, commit results, send heartbeats.

    Ctrl-C (or SIGTERM) stops after the job being run is finished, so no heartbeat is missed.
    """
    floor = parse_amount(price, USD_DECIMALS, what="price")
    premium = parse_amount(network_premium, USD_DECIMALS, what="network premium") if network_premium else None
    approvals = [_parse_approval(item) for item in approve]
    if isolation not in ("auto", "namespaces", "process"):
        raise ValidationError(f"unknown --isolation {isolation!r}: use auto, namespaces or process")

    def log(message: str) -> None:
        if as_json:
            print(json.dumps({"log": message}), flush=True)
        else:
            console.print(message)

    with open_context() as ctx:
        account = ctx.signer(from_)
        client = market_client(ctx)
        store = store_of(ctx)
        if stake is not None:
            _top_up_stake(ctx, client, account, parse_amount(stake, COV_DECIMALS, what="stake"), log)
        root = workdir or ctx.settings.subdir("compute/sandbox")
        sandbox = Sandbox(store, root=root, isolation=cast(IsolationMode, isolation))
        datasets = []
        for path in data:
            dataset = PrivateDataset.load(path)
            for digest, cap in approvals:
                dataset = dataset.approve(digest, cap)
            datasets.append(dataset)
            log(
                f"offering private data set {dataset.digest[:12]}… ({dataset.rows} rows) for compute-to-data, "
                f"{len(dataset.approvals)} approved algorithm(s)"
            )
        agent = ProviderAgent(
            client,
            account,
            store,
            resources=Resources(cpu, memory_mb, gpus),
            pricing=PricingRule(floor, undercut, network_premium=premium),
            sandbox=sandbox,
            datasets=datasets,
            log=log,
        )
        stop = threading.Event()
        _stop_on_signals(stop)
        verifier_thread = None
        verifier = None
        if verify:
            verifier = VerifierAgent(
                client, account, store, sandbox=sandbox, datasets=datasets, log=log, watchdog=False
            )
            verifier_thread = threading.Thread(target=verifier.run, args=(stop,), kwargs={"poll_s": poll}, daemon=True)
            verifier_thread.start()
        log(f"provider {account.address} running; Ctrl-C to stop")
        try:
            agent.run(stop, poll_s=poll, max_jobs=max_jobs)
        finally:
            stop.set()
            if verifier_thread is not None:
                verifier_thread.join(timeout=30)
        summary = {
            "provider": account.address,
            "bids": agent.stats.bids,
            "jobsWon": agent.stats.jobs_won,
            "jobs": agent.stats.job_ids,
            "unitsRun": agent.stats.units_run,
            "unitSeconds": round(agent.stats.unit_seconds, 2),
            "reports": agent.stats.reports,
            "checks": [render_check(check) for check in verifier.checks] if verifier else [],
        }
        if as_json:
            print_json(summary)
        else:
            console.print(f"stopped: {summary['jobsWon']} jobs won, {summary['unitsRun']} units run")


def _parse_approval(item: str) -> tuple[str, int | None]:
    """`DIGEST` or `DIGEST:MAX_OUTPUT_BYTES` from `--approve`."""
    digest, _, cap = item.rpartition(":")
    if not digest or not cap.isdigit():
        digest, cap = item, ""
    if cap and int(cap) < 1:
        raise ValidationError(f"--approve: the output cap must be positive, got {item!r}")
    return parse_digest(digest), int(cap) if cap else None


def _top_up_stake(
    ctx: Context, client: MarketClient, account: LocalAccount, wanted: int, log: Callable[[str], None]
) -> None:
    current = client.provider_stake(account.address)
    if current >= wanted:
        return
    cov = ctx.deployment.contract(ctx.chain, "CoveyToken")
    client.stake_provider(account, cov, wanted - current)
    log(f"staked {(wanted - current) / 10**COV_DECIMALS:g} COV as a {Role.PROVIDER.name.lower()}")


def _stop_on_signals(stop: threading.Event) -> None:
    """Finish the current step and exit on Ctrl-C or SIGTERM (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
