"""Creating, funding and joining alliances, and the rules each of those enforces."""

from __future__ import annotations

import pytest

from covey.alliance.client import Phase

COV = 10**18
MIN_STAKE = 100 * COV


def test_creator_funds_an_alliance_and_the_contract_holds_its_pool(world) -> None:
    (creator,) = world.people(1)
    before = world.balance(world.client.address)
    alliance_id = world.create(creator, reward_pool=500 * COV, rounds=3, rule_id=2)

    assert world.balance(creator.address) == 0
    assert world.balance(world.client.address) == before + 500 * COV
    info = world.client.alliance(alliance_id)
    assert info.creator == creator.address
    assert (info.reward_pool, info.rounds, info.aggregation_rule) == (500 * COV, 3, 2)
    assert info.penalty == MIN_STAKE // 2  # 50% of the minimum stake
    assert info.model_hash == info.initial_model_hash
    assert (info.current_round, info.member_count, info.model_round) == (0, 0, 0)
    assert world.client.phase(alliance_id) == Phase.IDLE
    assert world.client.global_model(alliance_id) == (info.initial_model_hash, 0)


def test_creation_and_top_ups_are_logged(world) -> None:
    alliance_id = world.create(reward_pool=7 * COV)
    (funder,) = world.people(1)
    world.give_cov(funder.address, 3 * COV)
    receipt = world.client.add_to_pool(alliance_id, 3 * COV, funder)

    (funded,) = world.client.events("PoolFunded", receipt)
    assert funded == {"allianceId": alliance_id, "funder": funder.address, "amount": 3 * COV, "rewardPool": 10 * COV}
    assert world.client.alliance(alliance_id).reward_pool == 10 * COV


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"spec_hash": b"\0" * 32}, "alliance: empty spec hash"),
        ({"initial_model_hash": b"\0" * 32}, "alliance: empty model hash"),
        ({"rounds": 0}, "alliance: rounds out of range"),
        ({"rounds": 10_001}, "alliance: rounds out of range"),
        ({"proposers_per_round": 0}, "alliance: proposers out of range"),
        ({"proposers_per_round": 17}, "alliance: proposers out of range"),
        ({"voters_per_round": 0}, "alliance: voters out of range"),
        ({"voters_per_round": 17}, "alliance: voters out of range"),
        ({"min_stake": 0}, "alliance: zero minimum stake"),
        ({"slash_bps": 10_001}, "alliance: slash above 100%"),
        ({"propose_duration_s": 0}, "alliance: bad propose duration"),
        ({"commit_duration_s": 30 * 86_400 + 1}, "alliance: bad commit duration"),
        ({"reveal_duration_s": 0}, "alliance: bad reveal duration"),
        ({"rule_id": 7}, "alliance: unknown aggregation rule"),
    ],
)
def test_creation_rejects_bad_parameters(world, overrides, reason) -> None:
    params = world.params(reward_pool=0, **overrides)
    assert world.reverts(world.alliance.functions.createAlliance(params.as_tuple()), world.owner) == reason


def test_members_join_with_enough_participant_stake(world) -> None:
    alliance_id = world.create()
    rich, poor, staked_elsewhere = world.people(3)
    world.stake(rich, MIN_STAKE)
    world.stake(poor, MIN_STAKE - 1)
    world.give_cov(staked_elsewhere.address, MIN_STAKE)
    world.send(world.cov.functions.approve(world.staking.address, MIN_STAKE), staked_elsewhere)
    world.send(world.staking.functions.stake(0, MIN_STAKE), staked_elsewhere)  # trainer stake does not count

    receipt = world.client.join(alliance_id, rich)
    assert world.client.events("MemberJoined", receipt) == [
        {"allianceId": alliance_id, "member": rich.address, "stake": MIN_STAKE}
    ]
    join = world.alliance.functions.join
    assert world.reverts(join(alliance_id), poor) == "alliance: stake below minimum"
    assert world.reverts(join(alliance_id), staked_elsewhere) == "alliance: stake below minimum"
    assert world.reverts(join(alliance_id), rich) == "alliance: already a member"
    assert world.reverts(join(alliance_id + 1), rich) == "alliance: unknown alliance"
    assert world.client.members(alliance_id) == [rich.address]
    assert world.alliance.functions.isMember(alliance_id, rich.address).call()
    assert not world.alliance.functions.isMember(alliance_id, poor.address).call()


def test_delegated_stake_counts_towards_the_minimum(world) -> None:
    alliance_id = world.create()
    operator, delegator = world.people(2)
    world.stake(operator, MIN_STAKE // 2)
    world.give_cov(delegator.address, MIN_STAKE // 2)
    world.send(world.cov.functions.approve(world.staking.address, MIN_STAKE // 2), delegator)
    world.send(world.staking.functions.delegate(operator.address, 4, MIN_STAKE // 2), delegator)

    world.client.join(alliance_id, operator)
    assert world.client.alliance(alliance_id).member_count == 1


def test_pool_top_ups_need_an_amount_and_an_unknown_alliance_has_no_views(world) -> None:
    alliance_id = world.create()
    assert world.reverts(world.alliance.functions.addToPool(alliance_id, 0), world.owner) == "alliance: zero amount"
    with pytest.raises(Exception, match="alliance: unknown alliance"):
        world.client.alliance(alliance_id + 1)
