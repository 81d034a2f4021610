"""deploy_suite and load_deployment: the manifest on disk, the Registry on chain, and stale manifests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from web3 import Web3

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import (
    CORE_STEPS,
    COV,
    DEFAULT_COMMISSION_DELAY_S,
    DEFAULT_EMISSION_PER_EPOCH_COV,
    DEFAULT_EPOCH_LENGTH_S,
    DEFAULT_UNBONDING_DELAY_S,
    LOCAL_COMMISSION_DELAY_S,
    LOCAL_EPOCH_LENGTH_S,
    LOCAL_UNBONDING_DELAY_S,
    SUITE_STEPS,
    DeployContext,
    Deployment,
    Step,
    deploy_suite,
    emission_per_epoch,
    load_deployment,
    manifest_path,
)
from covey.errors import ChainError
from tests.support import anvil_node

SUITE = ["Registry", "CoveyToken", "USDToken", "Treasury", "Staking"]


def test_the_manifest_records_addresses_code_hashes_and_blocks(suite, covey_home: Path) -> None:
    chain, deployment = suite.chain, suite.deployment
    path = covey_home / "deployments" / f"{chain.chain_id}.json"
    assert manifest_path(chain.chain_id) == path
    data = json.loads(path.read_text())

    assert set(data) == {"chainId", "contracts", "codeHashes", "blocks", "deployer", "deployedAt"}
    assert data["chainId"] == chain.chain_id
    assert list(data["contracts"]) == SUITE
    assert data["deployer"] == suite.owner.address
    assert abs(data["deployedAt"] - time.time()) < 300
    for name, address in data["contracts"].items():
        assert Web3.is_checksum_address(address)
        runtime_code = chain.w3.eth.get_code(address)
        assert data["codeHashes"][name] == "0x" + Web3.keccak(runtime_code).hex().removeprefix("0x")
        assert 0 < data["blocks"][name] <= chain.block_number()
    # Contracts come in dependency order, so their blocks never go backwards.
    blocks = [data["blocks"][name] for name in SUITE]
    assert blocks == sorted(blocks)
    assert data == deployment.to_json()
    # The atomic write leaves no temp files behind.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_the_suite_is_wired_and_readable_from_the_registry(suite) -> None:
    registry = suite.registry.functions
    assert registry.names().call() == [name for name in SUITE if name != "Registry"]
    for name in ("CoveyToken", "USDToken", "Treasury", "Staking"):
        assert registry.get(name).call() == suite.deployment.address(name)
        assert registry.has(name).call() is True
    assert registry.has("Arena").call() is False
    with pytest.raises(ChainError) as unknown:
        suite.chain.call(registry.get("Arena"))
    assert unknown.value.reason == "registry: unknown name"

    assert suite.cov.functions.minter().call() == suite.treasury.address
    assert suite.staking.functions.treasury().call() == suite.treasury.address
    assert suite.staking.functions.token().call() == suite.cov.address
    assert suite.treasury.functions.cov().call() == suite.cov.address
    assert suite.staking.functions.unbondingDelay().call() == suite.unbonding_delay_s
    assert suite.staking.functions.commissionDelay().call() == suite.commission_delay_s
    for contract in (suite.registry, suite.cov, suite.usd, suite.treasury, suite.staking):
        assert contract.functions.owner().call() == suite.owner.address


def test_only_the_owner_writes_the_registry(suite) -> None:
    registry, owner, stranger = suite.registry.functions, suite.owner, suite.people[0]
    assert suite.reverts(registry.set("Arena", stranger.address), stranger) == "ownable: caller is not the owner"
    assert suite.reverts(registry.set("", stranger.address), owner) == "registry: empty name"
    assert suite.reverts(registry.set("Arena", "0x" + "00" * 20), owner) == "registry: zero address"
    receipt = suite.send(registry.set("Arena", stranger.address), owner)
    assert suite.events(suite.registry, "AddressSet", receipt) == [
        {"name": "Arena", "addr": stranger.address, "previous": "0x" + "00" * 20}
    ]
    # Replacing an entry keeps one name in the list.
    suite.send(registry.set("Arena", owner.address), owner)
    assert registry.names().call().count("Arena") == 1
    assert registry.get("Arena").call() == owner.address


def test_load_deployment_reads_back_what_deploy_wrote(suite) -> None:
    loaded = load_deployment(suite.chain)
    assert loaded == suite.deployment
    assert loaded.address("Staking") == suite.staking.address
    assert loaded.contract(suite.chain, "CoveyToken").functions.symbol().call() == "COV"
    with pytest.raises(ChainError, match="no contract 'Arena'"):
        loaded.address("Arena")


def test_no_manifest_means_no_deployment(chain: Chain) -> None:
    with pytest.raises(ChainError) as missing:
        load_deployment(chain)
    assert str(missing.value).startswith(f"no Covey deployment on chain {chain.chain_id}: run `covey chain deploy`")


def test_a_manifest_that_no_longer_matches_the_chain_is_refused(suite) -> None:
    path = manifest_path(suite.chain.chain_id)
    data = json.loads(path.read_text())

    # As after a chain reset: the recorded address holds no code any more.
    data["contracts"]["Staking"] = Web3.to_checksum_address("0x" + "ab" * 20)
    path.write_text(json.dumps(data))
    with pytest.raises(ChainError) as stale:
        load_deployment(suite.chain)
    message = str(stale.value)
    assert message.startswith(f"no Covey deployment on chain {suite.chain.chain_id}: run `covey chain deploy`")
    assert "Staking" in message

    # As after a redeploy elsewhere: the address has code, but not the code we deployed.
    data["contracts"]["Staking"] = suite.deployment.address("Registry")
    path.write_text(json.dumps(data))
    with pytest.raises(ChainError, match="no Covey deployment"):
        load_deployment(suite.chain)

    path.write_text("{not json")
    with pytest.raises(ChainError, match="unreadable manifest"):
        load_deployment(suite.chain)


def test_the_suite_extends_by_steps_and_a_failing_step_is_named(chain: Chain) -> None:
    owner, module = dev_accounts(2)

    def register_module(ctx: DeployContext) -> None:
        ctx.transact(ctx["Staking"].functions.setModule(module.address, True))

    def mint_as_owner(ctx: DeployContext) -> None:
        ctx.transact(ctx["CoveyToken"].functions.mint(ctx.deployer.address, 1))

    # A capability joins the suite by adding its steps after the core ones.
    assert SUITE_STEPS[: len(CORE_STEPS)] == list(CORE_STEPS)
    deployment = deploy_suite(chain, owner, steps=[*CORE_STEPS, Step("register a module", register_module)])
    assert deployment.contract(chain, "Staking").functions.isModule(module.address).call() is True
    assert load_deployment(chain) == deployment

    with pytest.raises(ChainError) as failed:
        deploy_suite(chain, owner, steps=[*CORE_STEPS, Step("mint as the owner", mint_as_owner)])
    assert "at 'mint as the owner'" in str(failed.value)
    assert failed.value.reason == "cov: caller is not the minter"


def _schedule(chain: Chain, deployment: Deployment) -> tuple[int, int, int, int]:
    staking, treasury = deployment.contract(chain, "Staking"), deployment.contract(chain, "Treasury")
    return (
        int(staking.functions.unbondingDelay().call()),
        int(staking.functions.commissionDelay().call()),
        int(treasury.functions.epochLength().call()),
        int(treasury.functions.emissionPerEpoch().call()),
    )


def test_a_local_chain_gets_delays_of_seconds_and_the_same_yearly_emission(chain: Chain) -> None:
    owner = dev_accounts(1)[0]
    deployment = deploy_suite(chain, owner, steps=CORE_STEPS)

    unbonding, commission, epoch, per_epoch = _schedule(chain, deployment)
    assert (unbonding, commission, epoch) == (LOCAL_UNBONDING_DELAY_S, LOCAL_COMMISSION_DELAY_S, LOCAL_EPOCH_LENGTH_S)
    assert unbonding <= 60 and commission <= 60 and epoch == 60  # the Treasury's shortest epoch
    # A minute's emission is a day's over 1,440: the same COV a day (to the wei rounded off), a year, a decade.
    epochs_a_day = DEFAULT_EPOCH_LENGTH_S // epoch
    assert 0 <= DEFAULT_EMISSION_PER_EPOCH_COV * COV - per_epoch * epochs_a_day < epochs_a_day

    # Knobs given win; an epoch length alone keeps the yearly rate.
    custom = deploy_suite(chain, owner, steps=CORE_STEPS, unbonding_delay_s=100, epoch_length_s=3_600)
    assert _schedule(chain, custom) == (100, LOCAL_COMMISSION_DELAY_S, 3_600, emission_per_epoch(3_600))
    assert 0 <= DEFAULT_EMISSION_PER_EPOCH_COV * COV - emission_per_epoch(3_600) * 24 < 24


def test_any_other_chain_gets_the_public_delays() -> None:
    with anvil_node("--chain-id", "4242") as url:  # a chain id no dev chain uses
        chain = Chain.from_rpc(url)
        assert not chain.is_local
        deployment = deploy_suite(chain, dev_accounts(1)[0], steps=CORE_STEPS)
        assert _schedule(chain, deployment) == (
            DEFAULT_UNBONDING_DELAY_S,
            DEFAULT_COMMISSION_DELAY_S,
            DEFAULT_EPOCH_LENGTH_S,
            DEFAULT_EMISSION_PER_EPOCH_COV * COV,
        )
