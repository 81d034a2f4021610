"""The suite as steps: `Step`s run in order against one `DeployContext`, the knobs (`SuiteOptions`), and the core.

`CORE_STEPS` deploy the token economy every capability builds on; each capability's deploy module adds
its own steps (`covey.chain.suite.suite_steps()` gathers them), and `covey.chain.deploy.deploy_suite` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from covey.chain.chain import Chain
from covey.chain.units import COV

DAY_S = 86_400

DEFAULT_UNBONDING_DELAY_S = 7 * DAY_S
DEFAULT_COMMISSION_DELAY_S = 1 * DAY_S
DEFAULT_GENESIS_COV = 100_000_000  # 10% of the 1e9 cap, minted to the deployer
DEFAULT_EMISSION_PER_EPOCH_COV = 100_000  # ~36.5M COV a year: the cap lasts decades
DEFAULT_EPOCH_LENGTH_S = DAY_S

# A local chain's clock follows wall time (x402 clients sign validity windows from it), so nothing may
# travel in time there: its suite gets delays of seconds instead, and whoever waits for one waits for real.
LOCAL_UNBONDING_DELAY_S = 3
LOCAL_COMMISSION_DELAY_S = 2
LOCAL_EPOCH_LENGTH_S = 60  # the Treasury's MIN_EPOCH_LENGTH; emission per epoch shrinks to keep the yearly rate


def emission_per_epoch(epoch_length_s: int) -> int:
    """COV wei per epoch of `epoch_length_s` that keeps the default yearly emission rate."""
    return DEFAULT_EMISSION_PER_EPOCH_COV * COV * epoch_length_s // DEFAULT_EPOCH_LENGTH_S


# -- what a deployment is -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteOptions:
    """The knobs of one suite deployment (delays in seconds, genesis in whole COV, emission in COV wei)."""

    unbonding_delay_s: int = DEFAULT_UNBONDING_DELAY_S
    commission_delay_s: int = DEFAULT_COMMISSION_DELAY_S
    genesis_cov: int = DEFAULT_GENESIS_COV
    emission_per_epoch: int = DEFAULT_EMISSION_PER_EPOCH_COV * COV
    epoch_length_s: int = DEFAULT_EPOCH_LENGTH_S

    @classmethod
    def for_chain(
        cls,
        chain: Chain,
        *,
        unbonding_delay_s: int | None = None,
        commission_delay_s: int | None = None,
        genesis_cov: int | None = None,
        emission_per_epoch_cov: int | None = None,
        epoch_length_s: int | None = None,
    ) -> SuiteOptions:
        """The given knobs, the rest defaulted for `chain`: seconds-long delays on a local chain, days elsewhere.

        An epoch length without an emission keeps the default yearly emission rate.
        """
        local = chain.is_local
        if epoch_length_s is None:
            epoch_length_s = LOCAL_EPOCH_LENGTH_S if local else DEFAULT_EPOCH_LENGTH_S
        if unbonding_delay_s is None:
            unbonding_delay_s = LOCAL_UNBONDING_DELAY_S if local else DEFAULT_UNBONDING_DELAY_S
        if commission_delay_s is None:
            commission_delay_s = LOCAL_COMMISSION_DELAY_S if local else DEFAULT_COMMISSION_DELAY_S
        return cls(
            unbonding_delay_s=unbonding_delay_s,
            commission_delay_s=commission_delay_s,
            genesis_cov=DEFAULT_GENESIS_COV if genesis_cov is None else genesis_cov,
            emission_per_epoch=(
                emission_per_epoch(epoch_length_s) if emission_per_epoch_cov is None else emission_per_epoch_cov * COV
            ),
            epoch_length_s=epoch_length_s,
        )


@dataclass
class DeployContext:
    """What steps share while the suite is deployed: the chain, the deployer, options, and what exists so far."""

    chain: Chain
    deployer: LocalAccount
    options: SuiteOptions
    contracts: dict[str, Contract] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)

    def deploy(self, name: str, *args: Any) -> Contract:
        """Deploy contract `name` (its file name is also its suite and Registry name) and record its block."""
        w3 = self.chain.w3
        nonce = w3.eth.get_transaction_count(self.deployer.address, "pending")
        first_block = self.chain.block_number() + 1
        contract = self.chain.deploy(name, *args, sender=self.deployer)
        self.contracts[name] = contract
        self.blocks[name] = _deployment_block(self.chain, self.deployer.address, nonce, first_block)
        return contract

    def transact(self, fn: ContractFunction) -> TxReceipt:
        """Send a wiring transaction from the deployer."""
        return self.chain.transact(fn, self.deployer)

    def __getitem__(self, name: str) -> Contract:
        return self.contracts[name]


@dataclass(frozen=True)
class Step:
    """One deploy or wiring action; `name` says what it does when it fails."""

    name: str
    run: Callable[[DeployContext], None]


def _deploy_registry(ctx: DeployContext) -> None:
    ctx.deploy("Registry")


def _deploy_cov(ctx: DeployContext) -> None:
    ctx.deploy("CoveyToken", ctx.options.genesis_cov * COV)


def _deploy_usd(ctx: DeployContext) -> None:
    ctx.deploy("USDToken")


def _deploy_treasury(ctx: DeployContext) -> None:
    ctx.deploy("Treasury", ctx["CoveyToken"].address)


def _deploy_staking(ctx: DeployContext) -> None:
    opts = ctx.options
    ctx.deploy(
        "Staking", ctx["CoveyToken"].address, ctx["Treasury"].address, opts.unbonding_delay_s, opts.commission_delay_s
    )


def _make_treasury_the_minter(ctx: DeployContext) -> None:
    ctx.transact(ctx["CoveyToken"].functions.setMinter(ctx["Treasury"].address))


def _start_emission(ctx: DeployContext) -> None:
    opts = ctx.options
    ctx.transact(ctx["Treasury"].functions.setEmission(opts.emission_per_epoch, opts.epoch_length_s))


CORE_STEPS: tuple[Step, ...] = (
    Step("deploy Registry", _deploy_registry),
    Step("deploy CoveyToken", _deploy_cov),
    Step("deploy USDToken", _deploy_usd),
    Step("deploy Treasury", _deploy_treasury),
    Step("deploy Staking", _deploy_staking),
    Step("make the Treasury the COV minter", _make_treasury_the_minter),
    Step("start the emission schedule", _start_emission),
)
"""The token economy every capability builds on; later steps may use any contract these deploy."""

SUITE_STEPS: list[Step] = [*CORE_STEPS]
"""The core alone, for tests that add one capability's steps; the full suite is `suite.suite_steps()`."""


def _deployment_block(chain: Chain, sender: str, nonce: int, first_block: int) -> int:
    """The block holding `sender`'s transaction with `nonce`; usually `first_block` itself.

    `Chain.deploy` returns no receipt, and other senders may have mined blocks meanwhile, so look the
    transaction up by sender and nonce in the few blocks since.
    """
    last_block = chain.block_number()
    for number in range(first_block, last_block + 1):
        block = chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block.get("transactions", []):
            if isinstance(tx, Mapping) and tx.get("from") == sender and int(tx.get("nonce", -1)) == nonce:
                return number
    # A backend that cannot list transactions: the first possible block is a safe place to start indexing.
    return first_block
