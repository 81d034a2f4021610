"""Finalising rounds: the stake-weighted tally per update and per model hash, rewards, slashes, the pool."""

from __future__ import annotations

from web3.logs import DISCARD

from covey.alliance.client import Phase, UpdateStatus, VoterOutcome

COV = 10**18
PENALTY = 50 * COV  # 50% of the 100 COV minimum stake


def assert_pools_are_backed(world) -> None:
    """The Alliance holds exactly the COV of every alliance's remaining pool."""
    pools = sum(world.client.alliance(i).reward_pool for i in range(1, world.client.count() + 1))
    assert world.balance(world.client.address) == pools


def test_a_round_pays_accepted_proposers_and_winning_voters_and_slashes_the_rest(world) -> None:
    alliance_id, members = world.alliance_with(5, reward_pool=900 * COV, rounds=2)
    proposers, voters = world.start(alliance_id, members)
    honest, poisoner = proposers
    inverted = voters[2]
    masks = {voters[0].address: 0b01, voters[1].address: 0b01, inverted.address: 0b10}
    treasury_before = world.balance(world.treasury.address)

    receipt = world.play(alliance_id, proposers, voters, masks, world.initial)

    # Round reward = pool / rounds left (2 training rounds + the closing round) = 300 COV:
    # 60% to the one accepted proposer, 40% to the two winning voters by stake x (1 + questions agreed).
    settled = world.client.events("UpdateSettled", receipt)
    assert [(e["index"], e["status"], e["acceptStake"], e["rejectStake"]) for e in settled] == [
        (0, UpdateStatus.ACCEPTED, 200 * COV, 100 * COV),
        (1, UpdateStatus.REJECTED, 100 * COV, 200 * COV),
    ]
    rewarded = {e["account"]: e["amount"] for e in world.client.events("Rewarded", receipt)}
    assert rewarded == {honest.address: 180 * COV, voters[0].address: 60 * COV, voters[1].address: 60 * COV}
    slashed = {e["account"]: (e["slashed"], e["reason"]) for e in world.client.events("Slashed", receipt)}
    assert slashed == {
        poisoner.address: (PENALTY, "alliance: update rejected"),
        inverted.address: (PENALTY, "alliance: vote on losing side"),
    }
    assert world.balance(honest.address) == 180 * COV
    assert (world.stake_of(honest), world.stake_of(poisoner), world.stake_of(inverted)) == (
        100 * COV,
        50 * COV,
        50 * COV,
    )

    # Slashed stake passed through the Treasury back into the pool.
    (recovered,) = world.client.events("SlashRecovered", receipt)
    assert (recovered["slashed"], recovered["recovered"]) == (2 * PENALTY, 2 * PENALTY)
    assert world.balance(world.treasury.address) == treasury_before
    info = world.client.alliance(alliance_id)
    assert info.reward_pool == 900 * COV - 300 * COV + 2 * PENALTY
    assert (info.total_paid, info.total_slashed, info.total_recovered) == (300 * COV, 2 * PENALTY, 2 * PENALTY)

    round_info = world.client.round(alliance_id, 1)
    assert (round_info.accepted_mask, round_info.rejected_mask, round_info.finalized) == (0b01, 0b10, True)
    assert (round_info.model_hash, round_info.model_confirmed) == (world.initial, True)
    assert world.client.accepted_updates(alliance_id, 1) == [world.client.proposals(alliance_id, 1)[0].update_hash]
    assert world.client.rejected_updates(alliance_id, 1) == [world.client.proposals(alliance_id, 1)[1].update_hash]
    outcomes = [(v.outcome, v.agreed) for v in world.client.votes(alliance_id, 1)]
    assert outcomes == [(VoterOutcome.WINNING, 3), (VoterOutcome.WINNING, 3), (VoterOutcome.LOSING, 1)]
    assert world.client.phase(alliance_id) == Phase.IDLE
    assert world.client.global_model(alliance_id) == (world.initial, 0)
    assert_pools_are_backed(world)


def test_the_next_round_confirms_the_model_and_the_closing_round_refunds_the_creator(world) -> None:
    (creator,) = world.people(1)
    alliance_id = world.create(creator, reward_pool=600 * COV, rounds=1)
    members = world.participants(5)
    for member in members:
        world.client.join(alliance_id, member)
    after_round_1 = world.hash_of("model after round 1")

    proposers, voters = world.start(alliance_id, members)
    everyone_accepts = {voter.address: 0b11 for voter in voters}
    world.play(alliance_id, proposers, voters, everyone_accepts, world.initial)
    assert world.client.model_after_round(alliance_id, 0) == world.initial
    assert world.client.model_after_round(alliance_id, 1) == b"\0" * 32  # not confirmed yet

    # The closing round draws voters only; they confirm the model round 1 produced.
    world.client.open_round(alliance_id, world.owner)
    assert world.client.start_round(alliance_id, world.owner)
    proposers, voters = world.client.committee(alliance_id, 2)
    assert proposers == [] and len(voters) == 3
    assert world.client.phase(alliance_id) == Phase.COMMITTING
    by_address = {m.address: m for m in members}
    voters = [by_address[a] for a in voters]
    wrong = voters[2]
    models = {v.address: after_round_1 for v in voters} | {wrong.address: world.hash_of("a miscomputed model")}
    pool_before = world.client.alliance(alliance_id).reward_pool
    receipt = world.play(alliance_id, [], voters, {v.address: 0 for v in voters}, models)

    (confirmed,) = world.client.events("ModelConfirmed", receipt)
    assert (confirmed["round"], confirmed["modelHash"], confirmed["stake"]) == (2, after_round_1, 200 * COV)
    assert {e["account"] for e in world.client.events("Slashed", receipt)} == {wrong.address}
    rewarded = {e["account"]: e["amount"] for e in world.client.events("Rewarded", receipt)}
    assert rewarded == {voters[0].address: pool_before // 2, voters[1].address: pool_before // 2}
    (completed,) = world.client.events("AllianceCompleted", receipt)
    assert completed["modelHash"] == after_round_1
    info = world.client.alliance(alliance_id)
    assert info.reward_pool == 0
    assert completed["refunded"] == info.refunded == PENALTY  # the slash came back and went to the creator
    assert world.balance(creator.address) == PENALTY
    assert world.client.phase(alliance_id) == Phase.COMPLETE
    assert world.client.global_model(alliance_id) == (after_round_1, 1)
    assert world.client.model_after_round(alliance_id, 1) == after_round_1

    functions = world.alliance.functions
    assert world.reverts(functions.openRound(alliance_id), world.owner) == "alliance: already complete"
    (newcomer,) = world.participants(1)
    assert world.reverts(functions.join(alliance_id), newcomer) == "alliance: already complete"
    assert world.reverts(functions.addToPool(alliance_id, 1), world.owner) == "alliance: already complete"
    assert_pools_are_backed(world)


def test_silence_is_slashed_and_without_a_quorum_no_update_is_judged(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    masks = {voter.address: 0b01 for voter in voters}

    receipt = world.play(
        alliance_id,
        proposers,
        voters,
        masks,
        world.initial,
        silent_proposers=[proposers[1]],
        silent_voters=[voters[2]],
        unrevealed_voters=[voters[1]],
    )

    # One third of the committee's stake revealed: no quorum, so the committed update is undecided.
    statuses = [p.status for p in world.client.proposals(alliance_id, 1)]
    assert statuses == [UpdateStatus.UNDECIDED, UpdateStatus.MISSING]
    slashed = {e["account"]: e["reason"] for e in world.client.events("Slashed", receipt)}
    assert slashed == {
        proposers[1].address: "alliance: no update committed",
        voters[1].address: "alliance: vote not revealed",
        voters[2].address: "alliance: vote not revealed",
    }
    rewarded = {e["account"] for e in world.client.events("Rewarded", receipt)}
    assert rewarded == {voters[0].address}
    assert world.client.round(alliance_id, 1).model_confirmed is False
    assert world.client.events("ModelConfirmed", receipt) == []
    outcomes = [v.outcome for v in world.client.votes(alliance_id, 1)]
    assert outcomes == [VoterOutcome.WINNING, VoterOutcome.SILENT, VoterOutcome.SILENT]
    assert_pools_are_backed(world)


def test_an_evenly_split_vote_leaves_the_update_undecided(world) -> None:
    alliance_id, members = world.alliance_with(6, voters_per_round=4)
    proposers, voters = world.start(alliance_id, members)
    masks = {voters[0].address: 0b11, voters[1].address: 0b11, voters[2].address: 0b10, voters[3].address: 0b10}

    receipt = world.play(alliance_id, proposers, voters, masks, world.initial)

    statuses = [p.status for p in world.client.proposals(alliance_id, 1)]
    assert statuses == [UpdateStatus.UNDECIDED, UpdateStatus.ACCEPTED]
    assert world.client.events("Slashed", receipt) == []
    assert {e["account"] for e in world.client.events("Rewarded", receipt)} == {proposers[1].address} | {
        v.address for v in voters
    }


def test_rewards_reach_delegators_through_staking(world) -> None:
    alliance_id, members = world.alliance_with(5)
    (delegator,) = world.people(1)
    world.give_cov(delegator.address, 100 * COV)
    proposers, voters = world.start(alliance_id, members)
    world.send(world.cov.functions.approve(world.staking.address, 100 * COV), delegator)
    world.send(world.staking.functions.delegate(proposers[0].address, 4, 100 * COV), delegator)

    receipt = world.play(alliance_id, proposers, voters, {v.address: 0b01 for v in voters}, world.initial)

    distributed = world.staking.events.RewardDistributed().process_receipt(receipt, errors=DISCARD)
    shares = {log["args"]["operator"]: log["args"] for log in distributed}
    paid = shares[proposers[0].address]
    assert paid["amount"] > 0 and paid["delegators_amount"] == paid["amount"] // 2
    pending = world.staking.functions.pendingRewards(delegator.address, proposers[0].address, 4).call()
    assert pending > 0


def test_slashed_stake_stays_in_the_treasury_once_the_allowance_is_spent(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    set_allowance = world.treasury.functions.setAllowance
    world.send(set_allowance(world.client.address, world.cov.address, 10 * COV), world.owner)
    try:
        treasury_before = world.balance(world.treasury.address)
        pool_before = world.client.alliance(alliance_id).reward_pool
        receipt = world.play(alliance_id, proposers, voters, {v.address: 0b01 for v in voters}, world.initial)
    finally:
        world.send(set_allowance(world.client.address, world.cov.address, 1_000_000 * COV), world.owner)

    (recovered,) = world.client.events("SlashRecovered", receipt)
    assert (recovered["slashed"], recovered["recovered"]) == (PENALTY, 10 * COV)
    assert world.balance(world.treasury.address) == treasury_before + PENALTY - 10 * COV
    (finalized,) = world.client.events("RoundFinalized", receipt)
    assert finalized["rewardPool"] == pool_before - finalized["paid"] + 10 * COV
    assert_pools_are_backed(world)
