"""Compute-market benchmark: a training job through the market against the same training run directly.

Measures, on the embedded chain in a throwaway COVEY_HOME:
- `overhead_ratio`: wall time from posting the job to every unit's result being committed, over the wall
  time of one plain process training the same units (one torch import, no chain, no sandbox);
- `verification_share`: the verifier's re-run seconds over the provider's unit seconds, at the market's
  sampling rate;
- `p_uncaught`: the chance a provider that fakes one unit of this job escapes the sample (hypergeometric),
  with a table for other job sizes and cheat fractions.
The default job is short (seconds per unit) so the fixed costs (bid window, a fresh sandboxed process per
unit, transactions) dominate; set COVEY_BENCH_COMPUTE_STEPS (optimiser steps per unit, e.g. 40000 for
about a minute per unit on an idle core) and COVEY_BENCH_COMPUTE_UNITS for a longer job. The machine may
be shared: the direct run is timed before and after the market run and the mean is used. Writes
bench/results/compute.json.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "compute.json"
UNITS = int(os.environ.get("COVEY_BENCH_COMPUTE_UNITS", "3"))
STEPS = int(os.environ.get("COVEY_BENCH_COMPUTE_STEPS", "200"))
DATASET = os.environ.get("COVEY_BENCH_COMPUTE_DATASET", "digits")
BID_WINDOW_S = 2
console = Console()

# Enough epochs that `max_steps` alone decides a unit's length.
EPOCHS = 100_000

DIRECT_PROGRAM = """
import sys, time
started = time.perf_counter()
from covey.compute.jobs import TrainUnit, train_unit_weights
task = open(sys.argv[1], "rb").read()
for seed in range(int(sys.argv[2])):
    train_unit_weights(task, TrainUnit(seed=seed, epochs=int(sys.argv[4]), max_steps=int(sys.argv[3])), {})
print(time.perf_counter() - started)
"""


def p_uncaught(units: int, faked: int, sampled: int) -> float:
    """The chance that none of `faked` bad units is among `sampled` units drawn without replacement."""
    if faked > units - sampled:
        return 0.0
    return math.comb(units - faked, sampled) / math.comb(units, sampled)


def sample_size(units: int, rate_bps: int) -> int:
    """The Market's sample size: ceil(units x rate), at least one, at most all."""
    return min(units, max(1, -(-units * rate_bps // 10_000)))


def run_direct(task_path: Path) -> float:
    """Wall seconds for one fresh process to train every unit (the user's own machine, no market)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", DIRECT_PROGRAM, str(task_path), str(UNITS), str(STEPS), str(EPOCHS)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def run_market(home: Path) -> dict[str, Any]:
    """Post the job on the embedded chain, let one provider win and run it, then a verifier check it."""
    os.environ["COVEY_HOME"] = str(home)
    from covey.chain import Chain, dev_accounts
    from covey.chain.deploy import SUITE_STEPS, deploy_suite
    from covey.chain.faucet import fund
    from covey.chain.market_deploy import MARKET_STEPS
    from covey.compute.client import JobTerms, MarketClient, Resources, delivered_units
    from covey.compute.jobs import TrainingJob, TrainUnit, publish_job
    from covey.compute.provider import PricingRule, ProviderAgent, wait_for
    from covey.compute.sandbox import Sandbox
    from covey.compute.verifier import VerifierAgent
    from covey.config import get_settings
    from covey.ml import default_spec
    from covey.storage import open_store

    settings = get_settings()
    store = open_store(None, settings.data_dir)
    spec = default_spec(DATASET)
    task = store.put(spec.to_bytes())
    task_path = home / "task.json"
    task_path.write_bytes(spec.to_bytes())
    direct_before_s = run_direct(task_path)

    with Chain.embedded(settings.subdir("chain")) as chain:
        owner, buyer, provider_key, verifier_key = dev_accounts(4)
        deployment = deploy_suite(chain, owner, steps=[*SUITE_STEPS, *MARKET_STEPS])
        client = MarketClient.from_deployment(chain, deployment)
        for account in (buyer, provider_key):
            fund(chain, deployment, account.address)
        client.stake_provider(
            provider_key, deployment.contract(chain, "CoveyToken"), client.params().min_provider_stake
        )
        client.set_verifier(owner, verifier_key.address)
        sandbox = Sandbox(store, root=home / "sandbox")
        provider = ProviderAgent(
            client, provider_key, store, resources=Resources(1, 4096, 0), pricing=PricingRule(10), sandbox=sandbox
        )
        provider.register()
        units = [TrainUnit(seed=seed, epochs=EPOCHS, max_steps=STEPS) for seed in range(UNITS)]
        job = TrainingJob(task=task.digest, units=units)
        stop = threading.Event()
        thread = threading.Thread(target=provider.run, args=(stop,), kwargs={"poll_s": 0.5}, daemon=True)
        thread.start()
        started = time.perf_counter()
        spec_ref = publish_job(store, job)
        terms = JobTerms(spec_ref.bytes32, UNITS, 20, 60, Resources(1, 2048, 0), BID_WINDOW_S, 120)
        job_id = client.post_job(buyer, terms)
        committed = wait_for(lambda: client.job(job_id).committed_units == UNITS, 3_600, poll_s=0.5)
        market_s = time.perf_counter() - started
        stop.set()
        thread.join(timeout=60)
        if not committed:
            raise RuntimeError(f"the provider did not finish job {job_id}")

        verifier = VerifierAgent(client, verifier_key, store, sandbox=sandbox, watchdog=False)
        verify_started = time.perf_counter()
        wait_for(lambda: bool(verifier.step()) or client.job(job_id).status.finished, 3_600, poll_s=0.2)
        verify_s = time.perf_counter() - verify_started
        rate_bps = client.params().sample_rate_bps
        settled = delivered_units(client, job_id)
    # The machine is shared: time the direct run before and after the market run and take the mean.
    direct_after_s = run_direct(task_path)
    return {
        "direct_s": (direct_before_s + direct_after_s) / 2,
        "direct_runs_s": [direct_before_s, direct_after_s],
        "market_s": market_s,
        "unit_seconds": provider.stats.unit_seconds,
        "verify_unit_seconds": sum(check.seconds for check in verifier.checks),
        "verify_wall_s": verify_s,
        "sampled": len(verifier.checks),
        "verified_ok": all(check.ok for check in verifier.checks),
        "settled_units": len(settled),
        "sample_rate_bps": rate_bps,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="covey-bench-compute-") as tmp:
        measured = run_market(Path(tmp))
    units, rate = UNITS, measured["sample_rate_bps"]
    sampled = sample_size(units, rate)
    overhead = measured["market_s"] / measured["direct_s"]
    share = measured["verify_unit_seconds"] / measured["unit_seconds"]
    headline = p_uncaught(units, 1, sampled)
    shapes = [(20, 1), (20, 2), (20, 5), (20, 10), (100, 1), (100, 10), (100, 50)]
    uncaught_table = {f"{faked}/{size}": p_uncaught(size, faked, sample_size(size, rate)) for size, faked in shapes}

    table = Table(title=f"Compute market: {units} training units of {STEPS} steps on {DATASET}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    before, after = measured["direct_runs_s"]
    table.add_row(
        "direct: one process trains every unit (mean of before/after)",
        f"{measured['direct_s']:.1f} s ({before:.1f}, {after:.1f})",
    )
    table.add_row("market: post -> every result committed", f"{measured['market_s']:.1f} s")
    table.add_row("  of which units in the sandbox", f"{measured['unit_seconds']:.1f} s")
    table.add_row("overhead ratio (goal < 1.2 for jobs of a minute or more)", f"{overhead:.2f}x")
    table.add_row(
        f"verification: {sampled} of {units} units re-run ({rate / 100:.0f}% rate)",
        f"{measured['verify_unit_seconds']:.1f} s",
    )
    table.add_row("verification share of the work (re-run / provider seconds)", f"{share:.1%}")
    table.add_row("  sampled share of the units", f"{sampled / units:.1%}")
    table.add_row("sample passed and job settled", "yes" if measured["verified_ok"] else "NO")
    table.add_row("P(a provider faking 1 unit of this job is not caught)", f"{headline:.3f}")
    for shape, value in uncaught_table.items():
        table.add_row(f"  P(uncaught) faking {shape} units", f"{value:.3g}")
    console.print(table)
    fixed_per_unit_s = (measured["market_s"] - measured["direct_s"]) / units
    console.print(
        f"fixed cost per unit: {fixed_per_unit_s:.1f} s (a fresh sandboxed process and torch import, the result "
        f"upload and commit; plus a {BID_WINDOW_S} s bid window per job)"
    )
    if overhead >= 1.2:
        console.print(
            f"[yellow]overhead {overhead:.2f}x is above the 1.2x goal: units of "
            f"{measured['direct_s'] / units:.0f} s are too short to hide that fixed cost; "
            "raise COVEY_BENCH_COMPUTE_STEPS (40000 is about a minute of training per unit on an idle core)[/]"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "overhead_ratio": round(overhead, 3),
                "verification_share": round(share, 4),
                "expected_verification_share": round(sampled / units, 4),  # re-run units / units, no noise
                "p_uncaught": round(headline, 4),
                "p_uncaught_by_faked_units": {key: round(value, 4) for key, value in uncaught_table.items()},
                "units": units,
                "steps_per_unit": STEPS,
                "dataset": DATASET,
                "sample_rate_bps": rate,
                "sampled_units": sampled,
                "direct_s": round(measured["direct_s"], 2),
                "direct_runs_s": [round(value, 2) for value in measured["direct_runs_s"]],
                "market_s": round(measured["market_s"], 2),
                "unit_seconds": round(measured["unit_seconds"], 2),
                "verify_unit_seconds": round(measured["verify_unit_seconds"], 2),
                "bid_window_s": BID_WINDOW_S,
                "verified_ok": measured["verified_ok"],
                "fixed_cost_per_unit_s": round(fixed_per_unit_s, 2),
                "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
