"""Deploys the Arena task market onto a deployed suite and wires it: a Staking module that pays and slashes.

`deploy_arena` works on an existing `Deployment`; `ARENA_STEPS` are the same actions as suite `Step`s, for
`covey.chain.deploy.SUITE_STEPS` to append (the suite then registers "Arena" in the Registry itself).
`submission_commitment` and `scores_commitment` compute the hashes the Arena's commit-reveal checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from covey.chain.chain import Chain
from covey.chain.manifest import Deployment
from covey.chain.steps import DeployContext, Step

ARENA = "Arena"


def submission_commitment(weights_hash: bytes, salt: bytes, trainer: str) -> bytes:
    """The commitment `commitSubmission` takes: `keccak256(abi_encode(weightsHash, salt, trainer))`."""
    return bytes(Web3.keccak(encode(["bytes32", "bytes32", "address"], [weights_hash, salt, trainer])))


def scores_commitment(scores: Sequence[int], salt: bytes, validator: str) -> bytes:
    """The commitment `commitScores` takes: `keccak256(abi_encode(scores, salt, validator))`, scores a uint256[]."""
    return bytes(Web3.keccak(encode(["uint256[]", "bytes32", "address"], [list(scores), salt, validator])))


def deploy_arena(chain: Chain, deployment: Deployment, deployer: LocalAccount) -> str:
    """Deploy Arena wired to the suite's COV, Staking and Treasury, make it a Staking module, return its address.

    `deployer` must own the Staking (it registers the module); it also becomes the Arena's owner, the only
    account that may top up task pools from the Treasury (`fundFromTreasury`, within the Treasury's allowance).
    """
    arena = chain.deploy(
        ARENA,
        deployment.address("CoveyToken"),
        deployment.address("Staking"),
        deployment.address("Treasury"),
        sender=deployer,
    )
    _register_module(chain, deployment.contract(chain, "Staking"), arena.address, deployer)
    return str(arena.address)


def _register_module(chain: Chain, staking: Contract, arena_address: str, owner: LocalAccount) -> None:
    chain.transact(staking.functions.setModule(arena_address, True), owner)


def _deploy_arena_step(ctx: DeployContext) -> None:
    ctx.deploy(ARENA, ctx["CoveyToken"].address, ctx["Staking"].address, ctx["Treasury"].address)


def _register_arena_step(ctx: DeployContext) -> None:
    _register_module(ctx.chain, ctx["Staking"], ctx[ARENA].address, ctx.deployer)


ARENA_STEPS: list[Step] = [
    Step("deploy Arena", _deploy_arena_step),
    Step("make the Arena a Staking module", _register_arena_step),
]
"""The Arena's suite steps; they need CoveyToken, Staking and Treasury deployed before them."""
