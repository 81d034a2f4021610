"""Deploys the compute Market onto a deployed suite and makes it a Staking module (it slashes providers).

`deploy_market` works on an existing `Deployment`; `MARKET_STEPS` are the same actions as suite `Step`s for
`covey.chain.deploy.SUITE_STEPS` to append (the suite then registers "Market" in the Registry itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from covey.chain.chain import Chain
from covey.chain.manifest import Deployment
from covey.chain.steps import DeployContext, Step
from covey.chain.units import COV

MARKET = "Market"


@dataclass(frozen=True)
class MarketParams:
    """The Market's owner-set knobs: COV stakes and slashes in wei, the sample rate in basis points."""

    min_provider_stake: int = 100 * COV
    heartbeat_slash: int = 10 * COV
    wrong_result_slash: int = 50 * COV
    sample_rate_bps: int = 2_500  # a quarter of the units, and at least one, is re-run
    verify_window_s: int = 3_600

    def as_args(self) -> tuple[int, int, int, int, int]:
        return (
            self.min_provider_stake,
            self.heartbeat_slash,
            self.wrong_result_slash,
            self.sample_rate_bps,
            self.verify_window_s,
        )


def deploy_market(
    chain: Chain, deployment: Deployment, deployer: LocalAccount, params: MarketParams | None = None
) -> str:
    """Deploy the Market wired to the suite's USDToken and Staking, register it as a module, return its address.

    `deployer` must own the Staking (it registers the module); it also owns the Market (verifiers, params).
    """
    params = params or MarketParams()
    market = chain.deploy(
        MARKET, deployment.address("USDToken"), deployment.address("Staking"), *params.as_args(), sender=deployer
    )
    _register_module(chain, deployment.contract(chain, "Staking"), market.address, deployer)
    return str(market.address)


def _register_module(chain: Chain, staking: Contract, market_address: str, owner: LocalAccount) -> None:
    chain.transact(staking.functions.setModule(market_address, True), owner)


def _deploy_market_step(ctx: DeployContext) -> None:
    ctx.deploy(MARKET, ctx["USDToken"].address, ctx["Staking"].address, *MarketParams().as_args())


def _register_market_step(ctx: DeployContext) -> None:
    _register_module(ctx.chain, ctx["Staking"], ctx[MARKET].address, ctx.deployer)


MARKET_STEPS: list[Step] = [
    Step("deploy Market", _deploy_market_step),
    Step("make the Market a Staking module", _register_market_step),
]
"""The Market's suite steps; they need USDToken and Staking deployed before them."""
