"""The whole contract suite in deploy order: the token economy, then each capability's contracts."""

from __future__ import annotations

import importlib

from covey.chain.steps import CORE_STEPS, DeployContext, Step
from covey.chain.units import COV

ARENA_TREASURY_ALLOWANCE_COV = 10_000_000
"""How much emission the Treasury may add to Arena task pools (via `Arena.fundFromTreasury`)."""

# Capability deploy modules and the name of their step list; each is optional so a partial checkout still deploys.
CAPABILITY_STEP_LISTS = (
    ("covey.chain.arena_deploy", "ARENA_STEPS"),
    ("covey.chain.alliance_deploy", "ALLIANCE_STEPS"),
    ("covey.chain.market_deploy", "MARKET_STEPS"),
    ("covey.chain.hosts_deploy", "HOSTS_STEPS"),
)


def _deploy_batcher(ctx: DeployContext) -> None:
    ctx.deploy("PaymentBatcher")


def _allow_arena_emission(ctx: DeployContext) -> None:
    if "Arena" in ctx.contracts:
        allowance = ARENA_TREASURY_ALLOWANCE_COV * COV
        ctx.transact(ctx["Treasury"].functions.setAllowance(ctx["Arena"].address, ctx["CoveyToken"].address, allowance))


def suite_steps() -> list[Step]:
    """Every step of the full suite: core first, then the capabilities present in this checkout."""
    steps: list[Step] = [*CORE_STEPS, Step("deploy PaymentBatcher", _deploy_batcher)]
    for module_name, attribute in CAPABILITY_STEP_LISTS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name != module_name:
                raise
            continue
        steps.extend(getattr(module, attribute))
    steps.append(Step("let the Treasury fund Arena pools", _allow_arena_emission))
    return steps
