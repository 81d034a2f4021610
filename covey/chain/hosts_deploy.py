"""Deploys the HostRegistry (staked inference hosts) onto a deployed suite and wires it into the economy.

Wiring: a Staking module (it slashes hosts caught serving a different model), a Treasury USD allowance (it
pays hosts the inference subsidy), and an entry in the on-chain Registry so gateways and hosts find it. On a
local chain the Treasury also gets test USD to pay subsidies from. `HOSTS_STEPS` are the same actions as
suite `Step`s for `covey.chain.deploy.SUITE_STEPS` to append.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from covey.chain.chain import Chain
from covey.chain.manifest import Deployment
from covey.chain.steps import DeployContext, Step
from covey.chain.units import COV, USD

HOST_REGISTRY = "HostRegistry"
USD_FAUCET_CAP = 1_000_000 * USD


@dataclass(frozen=True)
class HostParams:
    """The HostRegistry's owner-set knobs: COV amounts in wei, USD in atomic units (6 decimals)."""

    min_stake: int = 100 * COV
    slash_amount: int = 50 * COV
    heartbeat_timeout_s: int = 300
    subsidy_bps: int = 5_000
    subsidy_allowance: int = 100_000 * USD
    """How much USD the Treasury lets the registry pay out as subsidy."""
    treasury_usd: int = 100_000 * USD
    """Test USD minted to the Treasury on a local chain, so subsidies can be paid at all."""

    def constructor_args(self) -> tuple[int, int, int, int]:
        return (self.min_stake, self.slash_amount, self.heartbeat_timeout_s, self.subsidy_bps)


def deploy_hosts(
    chain: Chain,
    deployment: Deployment,
    deployer: LocalAccount,
    params: HostParams | None = None,
    *,
    gateways: Sequence[str] = (),
) -> str:
    """Deploy the HostRegistry wired to the suite, allow `gateways`, and return its address.

    `deployer` must own the Staking, Treasury and Registry (it wires them); it also owns the HostRegistry
    (subsidy rate, gateways, parameters).
    """
    params = params or HostParams()
    registry = chain.deploy(
        HOST_REGISTRY,
        deployment.address("USDToken"),
        deployment.address("Staking"),
        deployment.address("Treasury"),
        *params.constructor_args(),
        sender=deployer,
    )
    contracts = {name: deployment.contract(chain, name) for name in ("Staking", "Treasury", "USDToken", "Registry")}
    _wire(chain, contracts, registry, deployer, params)
    for gateway in gateways:
        chain.transact(registry.functions.setGateway(gateway, True), deployer)
    return str(registry.address)


def _wire(
    chain: Chain, suite: dict[str, Contract], registry: Contract, owner: LocalAccount, params: HostParams
) -> None:
    staking, treasury, usd = suite["Staking"], suite["Treasury"], suite["USDToken"]
    chain.transact(staking.functions.setModule(registry.address, True), owner)
    chain.transact(treasury.functions.setAllowance(registry.address, usd.address, params.subsidy_allowance), owner)
    if chain.is_local:
        missing = params.treasury_usd - int(usd.functions.balanceOf(treasury.address).call())
        while missing > 0:
            minted = min(missing, USD_FAUCET_CAP)
            chain.transact(usd.functions.faucet(treasury.address, minted), owner)
            missing -= minted
    if "Registry" in suite:
        chain.transact(suite["Registry"].functions.set(HOST_REGISTRY, registry.address), owner)


def _deploy_hosts_step(ctx: DeployContext) -> None:
    ctx.deploy(
        HOST_REGISTRY,
        ctx["USDToken"].address,
        ctx["Staking"].address,
        ctx["Treasury"].address,
        *HostParams().constructor_args(),
    )


def _wire_hosts_step(ctx: DeployContext) -> None:
    # The suite registers every deployed contract in the Registry itself once all steps ran.
    suite = {name: ctx[name] for name in ("Staking", "Treasury", "USDToken")}
    _wire(ctx.chain, suite, ctx[HOST_REGISTRY], ctx.deployer, HostParams())


HOSTS_STEPS: list[Step] = [
    Step("deploy HostRegistry", _deploy_hosts_step),
    Step("wire the HostRegistry (Staking module, Treasury allowance)", _wire_hosts_step),
]
"""The HostRegistry's suite steps; they need USDToken, Staking, Treasury (and the Registry) before them."""
