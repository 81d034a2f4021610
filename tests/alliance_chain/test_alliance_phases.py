"""Proposals and commit-reveal votes: who may act in which phase, and phases that close early once everyone acted."""

from __future__ import annotations

import os

from covey.alliance.client import Phase
from covey.chain.alliance_deploy import vote_commitment


def test_proposers_commit_update_hashes_and_the_phase_closes_when_all_have(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    commit = world.alliance.functions.commitUpdate
    first, second = world.hash_of("update a"), world.hash_of("update b")

    receipt = world.client.commit_update(alliance_id, first, proposers[1])
    (committed,) = world.client.events("UpdateCommitted", receipt)
    assert (committed["proposer"], committed["index"], committed["updateHash"]) == (proposers[1].address, 1, first)
    assert world.reverts(commit(alliance_id, second), proposers[1]) == "alliance: already proposed"
    assert world.reverts(commit(alliance_id, second), voters[0]) == "alliance: not a proposer"
    assert world.reverts(commit(alliance_id, first), proposers[0]) == "alliance: duplicate update"
    assert world.reverts(commit(alliance_id, b"\0" * 32), proposers[0]) == "alliance: empty update hash"
    assert world.client.phase(alliance_id) == Phase.PROPOSING

    receipt = world.client.commit_update(alliance_id, second, proposers[0])
    (closed,) = world.client.events("PhaseClosedEarly", receipt)
    now = world.chain.timestamp()
    assert (closed["phase"], closed["commitEnd"], closed["revealEnd"]) == (Phase.PROPOSING, now + 100, now + 200)
    assert world.client.phase(alliance_id) == Phase.COMMITTING
    info = world.client.round(alliance_id, 1)
    assert (info.committed_count, info.committed_mask, info.propose_end) == (2, 0b11, now)
    assert [p.update_hash for p in world.client.proposals(alliance_id, 1)] == [second, first]


def test_proposals_close_at_the_deadline(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, _ = world.start(alliance_id, members)
    world.advance_to(world.client.round(alliance_id, 1).propose_end)
    commit = world.alliance.functions.commitUpdate
    assert world.reverts(commit(alliance_id, world.hash_of("late")), proposers[0]) == "alliance: proposals closed"
    assert world.reverts(commit(alliance_id + 1, world.hash_of("x")), proposers[0]) == "alliance: unknown alliance"


def test_actions_need_a_running_round(world) -> None:
    alliance_id, members = world.alliance_with(5)
    someone = members[0]
    functions = world.alliance.functions
    for fn in (
        functions.commitUpdate(alliance_id, world.hash_of("u")),
        functions.commitVote(alliance_id, world.hash_of("c")),
        functions.revealVote(alliance_id, 0, world.initial, b"\1" * 32),
        functions.finalizeRound(alliance_id),
    ):
        assert world.reverts(fn, someone) == "alliance: no round running"


def test_voters_commit_after_proposals_and_reveal_after_commits(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    functions = world.alliance.functions
    salt = os.urandom(32)
    commitment = vote_commitment(0b1, world.initial, salt, voters[0].address)
    assert functions.voteCommitment(0b1, world.initial, salt, voters[0].address).call() == commitment

    assert world.reverts(functions.commitVote(alliance_id, commitment), voters[0]) == "alliance: proposals still open"
    world.client.commit_update(alliance_id, world.hash_of("only update"), proposers[0])
    world.advance_to(world.client.round(alliance_id, 1).propose_end)
    assert world.client.phase(alliance_id) == Phase.COMMITTING

    assert world.reverts(functions.commitVote(alliance_id, commitment), proposers[0]) == "alliance: not a voter"
    assert world.reverts(functions.commitVote(alliance_id, b"\0" * 32), voters[0]) == "alliance: empty commitment"
    world.send(functions.commitVote(alliance_id, commitment), voters[0])
    assert world.reverts(functions.commitVote(alliance_id, commitment), voters[0]) == "alliance: already voted"
    reveal = functions.revealVote
    assert (
        world.reverts(reveal(alliance_id, 0b1, world.initial, salt), voters[0]) == "alliance: vote commits still open"
    )

    world.advance_to(world.client.round(alliance_id, 1).commit_end)
    assert world.client.phase(alliance_id) == Phase.REVEALING
    assert world.reverts(functions.commitVote(alliance_id, commitment), voters[1]) == "alliance: vote commits closed"
    assert world.reverts(reveal(alliance_id, 0b1, world.initial, salt), voters[1]) == "alliance: no vote committed"
    assert world.reverts(reveal(alliance_id, 0b1, world.initial, salt), proposers[0]) == "alliance: not a voter"
    assert world.reverts(reveal(alliance_id, 0b0, world.initial, salt), voters[0]) == (
        "alliance: reveal does not match commitment"
    )
    assert world.reverts(reveal(alliance_id, 0b1, world.initial, salt), voters[1]) == "alliance: no vote committed"
    receipt = world.send(reveal(alliance_id, 0b1, world.initial, salt), voters[0])
    assert world.client.events("VoteRevealed", receipt) == [
        {"allianceId": alliance_id, "round": 1, "voter": voters[0].address, "acceptMask": 1, "modelHash": world.initial}
    ]
    # The only committed voter revealed, so nothing is left to wait for.
    assert world.client.phase(alliance_id) == Phase.FINALISABLE
    assert world.reverts(reveal(alliance_id, 0b1, world.initial, salt), voters[0]) == "alliance: reveals closed"
    vote = world.client.votes(alliance_id, 1)[0]
    assert (vote.revealed, vote.accept_mask, vote.model_hash) == (True, 1, world.initial)


def test_a_vote_cannot_accept_an_update_that_was_never_committed(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    world.client.commit_update(alliance_id, world.hash_of("update of proposer 1"), proposers[1])
    world.advance_to(world.client.round(alliance_id, 1).propose_end)
    world.commit_vote(alliance_id, voters[0], 0b11, world.initial)  # bit 0: proposer 0 never committed
    world.advance_to(world.client.round(alliance_id, 1).commit_end)
    salt = world.salts[(alliance_id, 1, voters[0].address)]
    fn = world.alliance.functions.revealVote(alliance_id, 0b11, world.initial, salt)
    assert world.reverts(fn, voters[0]) == "alliance: vote for an update never committed"


def test_vote_commits_close_early_when_every_voter_committed(world) -> None:
    alliance_id, members = world.alliance_with(5)
    proposers, voters = world.start(alliance_id, members)
    for index, proposer in enumerate(proposers):
        world.client.commit_update(alliance_id, world.hash_of(f"u{index}"), proposer)
    for voter in voters[:-1]:
        world.commit_vote(alliance_id, voter, 0b11, world.initial)
    assert world.client.phase(alliance_id) == Phase.COMMITTING
    receipt = world.commit_vote(alliance_id, voters[-1], 0b11, world.initial)
    (closed,) = world.client.events("PhaseClosedEarly", receipt)
    assert closed["phase"] == Phase.COMMITTING
    assert world.client.phase(alliance_id) == Phase.REVEALING
    finalize = world.alliance.functions.finalizeRound(alliance_id)
    assert world.reverts(finalize, world.owner) == "alliance: round not over"
