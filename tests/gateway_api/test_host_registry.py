"""The HostRegistry contract: staked hosts register and heartbeat, gateways pass payments on with the
Treasury's subsidy, and a host's signed wrong answer gets it slashed and removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account import Account

from covey.errors import ChainError
from covey.gateway.payouts import HostPayouts
from covey.gateway.pricing import subsidy_for
from covey.gateway.registry import HostRegistryClient
from covey.gateway.signing import output_hash, sign_answer

from .conftest import COV, USD, World


def registry(world: World) -> HostRegistryClient:
    return HostRegistryClient(world.chain, world.registry.address)


def test_a_host_needs_stake_to_register_and_is_listed_while_live(world: World) -> None:
    client = registry(world)
    unstaked = world.host_account(stake=0)
    with pytest.raises(ChainError, match="hosts: stake below minimum"):
        client.register(unstaked, world.model_id, "http://127.0.0.1:1", 20_000)

    host = world.host_account()
    client.register(host, world.model_id, "http://127.0.0.1:9/", 20_000)

    listed = {info.address: info for info in client.live_hosts()}
    assert listed[host.address].endpoint == "http://127.0.0.1:9"
    assert listed[host.address].price_per_1k_atomic == 20_000 and listed[host.address].stake == 100 * COV
    before = listed[host.address].last_heartbeat
    world.chain.increase_time(30)
    client.heartbeat(host)
    assert {i.address: i for i in client.hosts()}[host.address].last_heartbeat >= before + 30
    client.deregister(host)
    assert host.address not in {info.address for info in client.hosts()}


def test_only_the_owner_sets_the_subsidy_and_never_above_ninety_percent(world: World) -> None:
    stranger = world.host_account(stake=0)
    with pytest.raises(ChainError, match="ownable: caller is not the owner"):
        world.chain.transact(world.registry.functions.setSubsidy(1_000), stranger)
    with pytest.raises(ChainError, match="hosts: subsidy above max"):
        world.chain.transact(world.registry.functions.setSubsidy(9_500), world.owner)
    assert registry(world).subsidy_bps() == 5_000


def test_a_gateway_passes_payments_on_and_the_treasury_adds_the_subsidy(world: World) -> None:
    client = registry(world)
    host = Account.create()
    paid_in = 3_000
    world.chain.transact(world.usd.functions.faucet(world.registry.address, paid_in), world.owner)
    treasury = world.deployment.address("Treasury")
    treasury_before = world.usd_balance(treasury)

    with pytest.raises(ChainError, match="hosts: caller is not a gateway"):
        client.pay_hosts(world.host_account(stake=0), {host.address: paid_in})
    (payout,) = client.pay_hosts(world.gateway_account, {host.address: paid_in})

    subsidy = subsidy_for(paid_in, 5_000)
    assert (payout.host, payout.amount, payout.subsidy) == (host.address, paid_in, subsidy)
    assert world.usd_balance(host.address) == paid_in + subsidy  # the host earns its full price
    assert world.usd_balance(treasury) == treasury_before - subsidy


def test_a_signed_wrong_answer_slashes_the_host_and_removes_it(world: World) -> None:
    client = registry(world)
    host = world.host_account()
    client.register(host, world.model_id, "http://127.0.0.1:9", 20_000)
    asked = os.urandom(32)
    wrong, right = output_hash("a different model's answer"), output_hash("the consensus answer")
    signed = sign_answer(host, client.address, world.chain.chain_id, asked, wrong)
    forged = sign_answer(Account.create(), client.address, world.chain.chain_id, asked, wrong)

    with pytest.raises(ChainError, match="hosts: not signed by the host"):
        client.report_mismatch(world.gateway_account, host.address, asked, right, wrong, forged)
    with pytest.raises(ChainError, match="hosts: the answers match"):
        client.report_mismatch(world.gateway_account, host.address, asked, wrong, wrong, signed)
    slashed = client.report_mismatch(world.gateway_account, host.address, asked, right, wrong, signed)

    assert slashed == 50 * COV
    assert world.host_stake(host.address) == 50 * COV
    assert not client.is_registered(host.address)
    with pytest.raises(ChainError, match="hosts: already reported"):
        client.report_mismatch(world.gateway_account, host.address, asked, right, wrong, signed)
    slashes = world.staking.events.Slashed().get_logs(from_block=0)
    assert any(
        e["args"]["account"] == host.address and e["args"]["reason"] == "hosts: served a different model"
        for e in slashes
    )


def test_the_deployment_wired_the_registry_into_the_economy(world: World) -> None:
    treasury = world.deployment.contract(world.chain, "Treasury")
    assert world.staking.functions.isModule(world.registry.address).call()
    assert int(treasury.functions.allowance(world.registry.address, world.usd.address).call()) > 0
    assert world.usd_balance(treasury.address) >= 9_000 * USD
    chain_registry = world.deployment.contract(world.chain, "Registry")
    assert chain_registry.functions.get("HostRegistry").call() == world.registry.address
    assert world.registry.functions.isGateway(world.gateway_account.address).call()
    assert world.registry.functions.owner().call() == world.owner.address


def test_what_hosts_are_owed_survives_a_gateway_crash_and_is_paid_exactly_once(world: World, tmp_path: Path) -> None:
    client = registry(world)
    state = tmp_path / "payouts.sqlite"
    world.chain.transact(world.usd.functions.faucet(world.registry.address, 10_000), world.owner)
    mined, unsent, early, late = (Account.create().address for _ in range(4))

    crashed = HostPayouts(client, world.gateway_account, state_path=state)
    # A payout whose transaction was mined just before the crash, with no time to record it.
    crashed.credit(mined, 700, "0xa:1")
    in_flight = crashed.store.claim(10_000, world.chain.block_number())
    assert in_flight is not None and in_flight.amounts == {mined: 700}
    client.pay_hosts(world.gateway_account, in_flight.amounts)
    # A payout recorded as sending that never reached the chain.
    crashed.credit(unsent, 300, "0xb:1")
    assert crashed.store.claim(10_000, world.chain.block_number()) is not None
    # Credits not yet paid out: one payment credited twice counts once.
    crashed.credit(early, 1_000, "0xc:1")
    crashed.credit(early, 1_000, "0xc:1")
    crashed.credit(late, 500, "0xd:1")
    crashed.store.close()  # killed: no final payout

    restarted = HostPayouts(client, world.gateway_account, state_path=state)
    assert restarted.owed() == {early: 1_000, late: 500}  # the in-flight payouts are not owed until reconciled
    restarted.flush()
    assert restarted.flush() == [] and restarted.owed() == {}

    subsidy_bps = client.subsidy_bps()
    for host, earned in ((mined, 700), (unsent, 300), (early, 1_000), (late, 500)):
        assert world.usd_balance(host) == earned + subsidy_for(earned, subsidy_bps), host
    restarted.store.close()
