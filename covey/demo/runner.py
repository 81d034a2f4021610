"""Runs the demo's stages in order on one chain, timing each and collecting what they report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.rule import Rule

from covey.chain import Chain
from covey.chain.chain import dev_accounts
from covey.chain.deploy import Deployment, deploy_suite, load_deployment
from covey.config import Settings
from covey.errors import ChainError

MAX_WAIT_S = 120
"""The longest protocol delay the demo waits out (a local chain's suite has delays of seconds)."""


class StageContext(Protocol):
    """What a chapter needs from the runner: a `DemoContext`, or a test's own object with these fields."""

    chain: Chain
    deployment: Deployment
    settings: Settings
    console: Console


@dataclass
class DemoContext:
    """What stages share: the chain, the deployed suite, the console and each stage's results."""

    chain: Chain
    deployment: Deployment
    settings: Settings
    console: Console
    results: dict[str, Any] = field(default_factory=dict)

    def wait_until(self, timestamp: int, why: str) -> None:
        """Say what the story waits for and wait for it in real time: nothing here moves the chain's clock."""
        seconds = timestamp - self.chain.now()
        if seconds > 0:
            self.console.print(f"[dim]waiting {seconds} s for {why}[/]")
        self.chain.wait_until(timestamp)


@dataclass(frozen=True)
class Stage:
    """One chapter of the story: a name people read and the function that plays it."""

    name: str
    title: str
    run: Callable[[DemoContext], dict[str, Any]]


def prepare(chain: Chain, console: Console) -> Deployment:
    """Reuse the suite already deployed on this chain, or deploy one (a local chain's: delays of seconds)."""
    try:
        deployment = load_deployment(chain)
    except ChainError:
        console.print(f"deploying the Covey suite on chain {chain.chain_id} ({chain.backend})")
        return deploy_suite(chain, dev_accounts(1)[0])
    console.print(f"using the Covey suite already on chain {chain.chain_id}")
    _check_delays(chain, deployment)
    return deployment


def _check_delays(chain: Chain, deployment: Deployment) -> None:
    """Refuse a suite whose protocol delays the story could not wait out in real time."""
    staking, treasury = deployment.contract(chain, "Staking"), deployment.contract(chain, "Treasury")
    delays = {
        "a commission delay": int(staking.functions.commissionDelay().call()),
        "an unbonding delay": int(staking.functions.unbondingDelay().call()),
        "an emission epoch": int(treasury.functions.epochLength().call()),
    }
    too_long = [f"{name} of {seconds:,} s" for name, seconds in delays.items() if seconds > MAX_WAIT_S]
    if too_long:
        raise ChainError(
            f"the Covey suite on chain {chain.chain_id} has {' and '.join(too_long)}, and the demo waits in real "
            "time: redeploy with `covey chain deploy` (delays of seconds on a local chain) or use a fresh COVEY_HOME"
        )


def run_demo(stages: list[Stage], settings: Settings, console: Console) -> dict[str, Any]:
    """Play every stage on the chain the settings name; return each stage's results and timing."""
    summary: dict[str, Any] = {"stages": {}}
    with Chain.connect(settings) as chain:
        if not chain.is_local:
            raise ChainError("the demo funds accounts from dev0: run it on a local chain (embedded or anvil)")
        warning = chain.clock_warning()
        if warning:
            console.print(f"[yellow]warning: {warning}[/]")
        deployment = prepare(chain, console)
        context = DemoContext(chain, deployment, settings, console)
        for stage in stages:
            console.print(Rule(f"[bold]{stage.title}"))
            started = time.perf_counter()
            result = stage.run(context)
            elapsed_s = time.perf_counter() - started
            context.results[stage.name] = result
            summary["stages"][stage.name] = {"seconds": round(elapsed_s, 2), **result}
            console.print(f"[dim]{stage.name} stage took {elapsed_s:.1f}s[/]")
        summary["chain"] = {"backend": chain.backend, "chainId": chain.chain_id, "block": chain.block_number()}
    return summary
