"""Opening and starting rounds: the stake snapshot, the future-block randomness, and the weighted draw."""

from __future__ import annotations

from collections import Counter

from eth_abi import encode
from web3 import Web3

from covey.alliance.client import Phase

COV = 10**18
MIN_STAKE = 100 * COV


def replay_draw(seed: bytes, weights: list[int], count: int) -> list[int]:
    """The contract's `_draw` in Python: weighted sampling without replacement from keccak(seed, k)."""
    left = list(weights)
    drawn = []
    for k in range(count):
        target = int.from_bytes(Web3.keccak(encode(["bytes32", "uint256"], [seed, k])), "big") % sum(left)
        cumulative = 0
        for index, weight in enumerate(left):
            if weight == 0:
                continue
            cumulative += weight
            if target < cumulative:
                drawn.append(index)
                left[index] = 0
                break
    return drawn


def test_the_committee_is_drawn_from_the_hash_of_a_block_fixed_at_open(world) -> None:
    stakes = [MIN_STAKE, 2 * MIN_STAKE, 3 * MIN_STAKE, 4 * MIN_STAKE, 5 * MIN_STAKE, 6 * MIN_STAKE]
    alliance_id = world.create(proposers_per_round=2, voters_per_round=3)
    members = world.people(len(stakes))
    for member, stake in zip(members, stakes, strict=True):
        world.stake(member, stake)
        world.client.join(alliance_id, member)

    receipt = world.send(world.alliance.functions.openRound(alliance_id), world.owner)
    (opened,) = world.client.events("RoundOpened", receipt)
    assert opened["randomnessBlock"] == receipt["blockNumber"] + 1
    assert (opened["eligibleCount"], opened["snapshotStake"]) == (6, sum(stakes))
    assert world.client.snapshot_weights(alliance_id) == stakes
    assert world.client.phase(alliance_id) == Phase.ARMED

    world.client.wait_for_randomness(alliance_id)
    receipt = world.send(world.alliance.functions.startRound(alliance_id), world.owner)
    (started,) = world.client.events("RoundStarted", receipt)
    block_hash = world.chain.w3.eth.get_block(opened["randomnessBlock"])["hash"]
    seed = Web3.keccak(encode(["bytes32", "uint256", "uint256"], [bytes(block_hash), alliance_id, 1]))
    assert started["seed"] == seed

    drawn = [members[i].address for i in replay_draw(seed, stakes, 5)]
    assert started["proposers"] == drawn[:2]
    assert started["voters"] == drawn[2:]
    assert world.client.committee(alliance_id, 1) == (drawn[:2], drawn[2:])
    assert world.client.phase(alliance_id) == Phase.PROPOSING
    info = world.client.round(alliance_id, 1)
    stake_of = {member.address: stake for member, stake in zip(members, stakes, strict=True)}
    assert info.committee_stake == sum(stake_of[address] for address in drawn[2:])
    assert info.propose_end == started["proposeEnd"] == world.chain.timestamp() + 100
    assert (info.commit_end, info.reveal_end) == (info.propose_end + 100, info.propose_end + 200)
    role, index = world.client.role_in(alliance_id, 1, drawn[1])
    assert (role.name, index) == ("PROPOSER", 1)
    role, index = world.client.role_in(alliance_id, 1, drawn[4])
    assert (role.name, index) == ("VOTER", 2)


def test_the_draw_is_weighted_by_stake_and_never_repeats_a_member() -> None:
    weights = [1, 1, 2, 4, 0, 8]
    picks: Counter[int] = Counter()
    for trial in range(3_000):
        drawn = replay_draw(Web3.keccak(text=str(trial)), weights, 1)
        picks[drawn[0]] += 1
        assert len(set(replay_draw(Web3.keccak(text=f"all{trial}"), weights, 5))) == 5
    assert picks[4] == 0  # no weight, never drawn
    assert picks[5] > picks[3] > picks[2] > picks[0]
    assert abs(picks[5] / 3_000 - 8 / 16) < 0.04


def test_stake_added_after_open_does_not_change_the_draw(world) -> None:
    alliance_id, members = world.alliance_with(5)
    world.client.open_round(alliance_id, world.owner)
    world.stake(members[0], 50 * MIN_STAKE)  # too late: the weights were fixed at open
    assert world.client.snapshot_weights(alliance_id) == [MIN_STAKE] * 5


def test_members_below_the_minimum_at_open_are_not_drawn(world) -> None:
    alliance_id, members = world.alliance_with(6, proposers_per_round=2, voters_per_round=3)
    world.send(world.staking.functions.unbond(4, 1), members[2])  # now 1 wei below the minimum
    world.client.open_round(alliance_id, world.owner)
    assert world.client.snapshot_weights(alliance_id)[2] == 0
    world.client.start_round(alliance_id, world.owner)
    proposers, voters = world.client.committee(alliance_id, 1)
    assert members[2].address not in proposers + voters
    assert sorted(proposers + voters) == sorted(m.address for i, m in enumerate(members) if i != 2)


def test_round_opening_and_starting_rules_and_a_short_committee(world) -> None:
    alliance_id, _ = world.alliance_with(3, proposers_per_round=2, voters_per_round=3)
    open_round, start_round = world.alliance.functions.openRound, world.alliance.functions.startRound
    assert world.reverts(open_round(alliance_id), world.owner) == "alliance: not enough eligible members"
    assert world.reverts(start_round(alliance_id), world.owner) == "alliance: round not opened"

    (late,) = world.participants(1)
    world.client.join(alliance_id, late)
    world.send(open_round(alliance_id), world.owner)
    assert world.reverts(open_round(alliance_id), world.owner) == "alliance: round in progress"
    # The randomness block is the next one, so a start in it (or before) cannot know its hash.
    assert world.reverts(start_round(alliance_id), world.owner) == "alliance: randomness block not mined yet"
    assert world.client.start_round(alliance_id, world.owner)
    # Four eligible members for three voters and two proposers: the round draws one proposer, never fewer voters.
    proposers, voters = world.client.committee(alliance_id, 1)
    assert (len(proposers), len(voters)) == (1, 3)
    assert world.reverts(start_round(alliance_id), world.owner) == "alliance: round not opened"
    assert world.reverts(open_round(alliance_id), world.owner) == "alliance: round in progress"
    assert world.reverts(open_round(alliance_id + 1), world.owner) == "alliance: unknown alliance"


def test_a_randomness_block_older_than_256_blocks_re_arms_instead_of_drawing(world) -> None:
    alliance_id, _ = world.alliance_with(5)
    world.client.open_round(alliance_id, world.owner)
    world.mine(300)

    receipt = world.send(world.alliance.functions.startRound(alliance_id), world.owner)
    (rearmed,) = world.client.events("RandomnessRearmed", receipt)
    assert rearmed["randomnessBlock"] == receipt["blockNumber"] + 1
    assert world.client.events("RoundStarted", receipt) == []
    assert world.client.phase(alliance_id) == Phase.ARMED
    assert world.client.start_round(alliance_id, world.owner)
    assert world.client.phase(alliance_id) == Phase.PROPOSING
