"""Deploys the Covey contract suite, wires its roles, and keeps the deployment manifest under COVEY_HOME.

The suite is a list of `Step`s (`covey.chain.steps`) run in order against one `DeployContext`; a later
capability (Arena, Alliance, Market...) joins the suite through `covey.chain.suite.suite_steps()`. Every
contract a step deploys is registered on chain in the `Registry` and recorded in the manifest
`COVEY_HOME/deployments/<chainId>.json` (`covey.chain.manifest`). This module re-exports both, so
`covey.chain.deploy` stays the one place to import deployment names from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from eth_account.signers.local import LocalAccount

from covey.chain.chain import Chain
from covey.chain.manifest import MANIFEST_DIR, Deployment, code_hash, load_deployment, manifest_path, write_manifest
from covey.chain.steps import (
    CORE_STEPS,
    DAY_S,
    DEFAULT_COMMISSION_DELAY_S,
    DEFAULT_EMISSION_PER_EPOCH_COV,
    DEFAULT_EPOCH_LENGTH_S,
    DEFAULT_GENESIS_COV,
    DEFAULT_UNBONDING_DELAY_S,
    LOCAL_COMMISSION_DELAY_S,
    LOCAL_EPOCH_LENGTH_S,
    LOCAL_UNBONDING_DELAY_S,
    SUITE_STEPS,
    DeployContext,
    Step,
    SuiteOptions,
    emission_per_epoch,
)
from covey.chain.suite import suite_steps
from covey.chain.units import COV
from covey.errors import ChainError

# What this module defined before the steps and the manifest moved out; importers keep using these names.
__all__ = [
    "CORE_STEPS",
    "COV",
    "DAY_S",
    "DEFAULT_COMMISSION_DELAY_S",
    "DEFAULT_EMISSION_PER_EPOCH_COV",
    "DEFAULT_EPOCH_LENGTH_S",
    "DEFAULT_GENESIS_COV",
    "DEFAULT_UNBONDING_DELAY_S",
    "LOCAL_COMMISSION_DELAY_S",
    "LOCAL_EPOCH_LENGTH_S",
    "LOCAL_UNBONDING_DELAY_S",
    "MANIFEST_DIR",
    "SUITE_STEPS",
    "DeployContext",
    "Deployment",
    "Step",
    "SuiteOptions",
    "deploy_suite",
    "emission_per_epoch",
    "load_deployment",
    "manifest_path",
]


def deploy_suite(
    chain: Chain,
    deployer: LocalAccount,
    *,
    unbonding_delay_s: int | None = None,
    commission_delay_s: int | None = None,
    genesis_cov: int | None = None,
    emission_per_epoch_cov: int | None = None,
    epoch_length_s: int | None = None,
    steps: Sequence[Step] | None = None,
) -> Deployment:
    """Deploy and wire the suite, register it in the Registry, write the manifest, and return it.

    Knobs left out take `SuiteOptions.for_chain`'s defaults: delays of seconds and one-minute emission
    epochs on a local chain (nothing there may travel in time), a day and a week elsewhere.
    `genesis_cov` (whole COV) goes to the deployer; the deployer owns every contract. `steps` defaults to
    the full suite (`covey.chain.suite.suite_steps()`); it must start with `CORE_STEPS` (the Registry first).
    """
    options = SuiteOptions.for_chain(
        chain,
        unbonding_delay_s=unbonding_delay_s,
        commission_delay_s=commission_delay_s,
        genesis_cov=genesis_cov,
        emission_per_epoch_cov=emission_per_epoch_cov,
        epoch_length_s=epoch_length_s,
    )
    ctx = DeployContext(chain, deployer, options)
    if steps is None:
        steps = suite_steps()
    for step in steps:
        try:
            step.run(ctx)
        except ChainError as exc:
            raise ChainError(f"deploying the Covey suite failed at {step.name!r}: {exc}", reason=exc.reason) from exc
    registry = ctx["Registry"]
    for name, contract in ctx.contracts.items():
        if name != "Registry":
            ctx.transact(registry.functions.set(name, contract.address))
    deployment = Deployment(
        chain_id=chain.chain_id,
        contracts={name: contract.address for name, contract in ctx.contracts.items()},
        code_hashes={name: code_hash(chain, contract.address) for name, contract in ctx.contracts.items()},
        blocks=dict(ctx.blocks),
        deployer=deployer.address,
        deployed_at=int(time.time()),
    )
    write_manifest(deployment)
    return deployment
