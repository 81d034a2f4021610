"""Deploys the Alliance onto a deployed suite and wires it: a Staking module with a Treasury allowance.

`deploy_alliance` works on an existing `Deployment`; `ALLIANCE_STEPS` are the same actions as suite `Step`s
for `covey.chain.deploy.SUITE_STEPS` to append (the suite then registers "Alliance" in the Registry itself).
`ensure_alliance` finds the Alliance of a suite (its manifest, then its Registry) or, on a dev chain, deploys it.
`vote_commitment` computes the hash `Alliance.commitVote` takes.
"""

from __future__ import annotations

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from covey.chain.chain import Chain
from covey.chain.manifest import Deployment
from covey.chain.steps import DeployContext, Step
from covey.chain.units import COV
from covey.errors import ChainError

ALLIANCE = "Alliance"

# Staking sends slashed stake to the Treasury; the Alliance takes it back into its pools with
# `Treasury.pay`, never more per finalisation than it just slashed. The allowance caps what a bug could
# move out of the Treasury; the owner tops it up with `Treasury.setAllowance` when it runs low.
DEFAULT_SLASH_RECOVERY_ALLOWANCE_COV = 1_000_000


def vote_commitment(accept_mask: int, model_hash: bytes, salt: bytes, voter: str) -> bytes:
    """The commitment `commitVote` takes: `keccak256(abi_encode(acceptMask, modelHash, salt, voter))`."""
    encoded = encode(["uint256", "bytes32", "bytes32", "address"], [accept_mask, model_hash, salt, voter])
    return bytes(Web3.keccak(encoded))


def deploy_alliance(
    chain: Chain,
    deployment: Deployment,
    deployer: LocalAccount,
    *,
    slash_recovery_allowance_cov: int = DEFAULT_SLASH_RECOVERY_ALLOWANCE_COV,
) -> str:
    """Deploy the Alliance wired to the suite's COV, Staking and Treasury, wire it, and return its address.

    `deployer` must own the Staking (to register the module) and the Treasury (to grant the allowance
    through which slashed stake returns to alliance pools).
    """
    alliance = chain.deploy(
        ALLIANCE,
        deployment.address("CoveyToken"),
        deployment.address("Staking"),
        deployment.address("Treasury"),
        sender=deployer,
    )
    _wire(
        chain,
        deployment.contract(chain, "Staking"),
        deployment.contract(chain, "Treasury"),
        deployment.address("CoveyToken"),
        alliance.address,
        deployer,
        slash_recovery_allowance_cov * COV,
    )
    return str(alliance.address)


def ensure_alliance(chain: Chain, deployment: Deployment, deployer: LocalAccount | None = None) -> str:
    """The Alliance's address: from the manifest, else from the suite's Registry, else newly deployed.

    Deploying needs `deployer` (the suite's owner) and a local dev chain; the new address is set in the
    Registry, so later processes find it there until the suite itself includes the Alliance.
    """
    if ALLIANCE in deployment.contracts:
        return deployment.address(ALLIANCE)
    registry = deployment.contract(chain, "Registry")
    if registry.functions.has(ALLIANCE).call():
        return str(registry.functions.get(ALLIANCE).call())
    if deployer is None or not chain.is_local:
        raise ChainError(f"no Alliance in the Covey deployment on chain {chain.chain_id}: redeploy the suite")
    address = deploy_alliance(chain, deployment, deployer)
    chain.transact(registry.functions.set(ALLIANCE, address), deployer)
    return address


def _wire(
    chain: Chain,
    staking: Contract,
    treasury: Contract,
    token: str,
    alliance: str,
    owner: LocalAccount,
    allowance: int,
) -> None:
    chain.transact(staking.functions.setModule(alliance, True), owner)
    chain.transact(treasury.functions.setAllowance(alliance, token, allowance), owner)


def _deploy_alliance_step(ctx: DeployContext) -> None:
    ctx.deploy(ALLIANCE, ctx["CoveyToken"].address, ctx["Staking"].address, ctx["Treasury"].address)


def _wire_alliance_step(ctx: DeployContext) -> None:
    _wire(
        ctx.chain,
        ctx["Staking"],
        ctx["Treasury"],
        ctx["CoveyToken"].address,
        ctx[ALLIANCE].address,
        ctx.deployer,
        DEFAULT_SLASH_RECOVERY_ALLOWANCE_COV * COV,
    )


ALLIANCE_STEPS: list[Step] = [
    Step("deploy Alliance", _deploy_alliance_step),
    Step("make the Alliance a Staking module with a Treasury allowance", _wire_alliance_step),
]
"""The Alliance's suite steps; they need CoveyToken, Staking and Treasury deployed before them."""
