"""Deploys the Covey contract suite, wires its roles, and keeps the deployment manifest under COVEY_HOME.

The suite is a list of `Step`s run in order against one `DeployContext`; a later capability (Arena,
Alliance, Market...) joins the suite through `covey.chain.suite.suite_steps()`. Every contract a step
deploys is registered on chain in the `Registry` and recorded in `COVEY_HOME/deployments/<chainId>.json`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from covey.chain.chain import Chain
from covey.config import get_settings
from covey.errors import ChainError

COV = 10**18
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

MANIFEST_DIR = "deployments"


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


@dataclass(frozen=True)
class Deployment:
    """Where the suite lives on one chain: addresses, runtime code hashes and deployment blocks by name."""

    chain_id: int
    contracts: dict[str, str]
    code_hashes: dict[str, str]
    blocks: dict[str, int]
    deployer: str
    deployed_at: int

    def address(self, name: str) -> str:
        """The checksummed address of contract `name` (e.g. "Staking")."""
        try:
            return self.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self.contracts))
            raise ChainError(
                f"no contract {name!r} in the Covey deployment on chain {self.chain_id}: it has {known}"
            ) from None

    def contract(self, chain: Chain, name: str) -> Contract:
        """A web3 handle on contract `name`, with its ABI."""
        return chain.contract(name, self.address(name))

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        return {
            "chainId": self.chain_id,
            "contracts": dict(self.contracts),
            "codeHashes": dict(self.code_hashes),
            "blocks": dict(self.blocks),
            "deployer": self.deployer,
            "deployedAt": self.deployed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        """Parse a manifest; a missing field raises `KeyError`, a wrong type `TypeError`/`ValueError`."""
        return cls(
            chain_id=int(data["chainId"]),
            contracts={str(k): Web3.to_checksum_address(v) for k, v in data["contracts"].items()},
            code_hashes={str(k): str(v) for k, v in data["codeHashes"].items()},
            blocks={str(k): int(v) for k, v in data["blocks"].items()},
            deployer=Web3.to_checksum_address(data["deployer"]),
            deployed_at=int(data["deployedAt"]),
        )


# -- the steps ----------------------------------------------------------------------------------------


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


# -- deploying and loading ----------------------------------------------------------------------------


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
        from covey.chain.suite import suite_steps  # the suite module imports this one

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
        code_hashes={name: _code_hash(chain, contract.address) for name, contract in ctx.contracts.items()},
        blocks=dict(ctx.blocks),
        deployer=deployer.address,
        deployed_at=int(time.time()),
    )
    _write_manifest(deployment)
    return deployment


def manifest_path(chain_id: int) -> Path:
    """Where the manifest for chain `chain_id` lives: `COVEY_HOME/deployments/<chainId>.json`."""
    return get_settings().subdir(MANIFEST_DIR) / f"{chain_id}.json"


def load_deployment(chain: Chain) -> Deployment:
    """The suite recorded for this chain, after checking that every contract's code is still there.

    Raises `ChainError` when there is no manifest or it no longer matches the chain (a restarted node).
    """
    path = manifest_path(chain.chain_id)
    if not path.exists():
        raise _no_deployment(chain, f"no manifest at {path}")
    try:
        deployment = Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _no_deployment(chain, f"unreadable manifest {path}: {exc!r}") from exc
    if deployment.chain_id != chain.chain_id:
        raise _no_deployment(chain, f"{path} is for chain {deployment.chain_id}")
    for name, address in deployment.contracts.items():
        if _code_hash(chain, address) != deployment.code_hashes.get(name):
            raise _no_deployment(chain, f"{name} at {address} is missing or changed")
    return deployment


# -- helpers ------------------------------------------------------------------------------------------


def _no_deployment(chain: Chain, detail: str) -> ChainError:
    return ChainError(f"no Covey deployment on chain {chain.chain_id}: run `covey chain deploy` ({detail})")


def _code_hash(chain: Chain, address: str) -> str:
    code = chain.w3.eth.get_code(Web3.to_checksum_address(address))
    return "0x" + Web3.keccak(HexBytes(code)).hex().removeprefix("0x")


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


def _write_manifest(deployment: Deployment) -> Path:
    """Write the manifest atomically (temp file, fsync, rename), so a crash never leaves half a file."""
    path = manifest_path(deployment.chain_id)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(deployment.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
