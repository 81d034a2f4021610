"""A member restarted mid-round picks up its vote from its state file: it reveals what it committed before.

"Restarted" here is a new `Participant` with the same key and data directory and nothing else carried over,
as `covey.alliance.worker` is after a SIGKILL (tests/faults kills real worker processes).
"""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount

from covey.alliance.client import Phase
from covey.alliance.participant import Behaviour, Participant
from covey.alliance.runner import RunConfig, Setup, private_partition, set_up
from covey.alliance.state import MemberState, VoteRecord
from covey.chain.alliance_deploy import vote_commitment
from covey.storage import LocalStore

CONFIG = RunConfig(behaviours=("honest",) * 5, rounds=1, proposers=2, voters=3)


def member(world, setup: Setup, store: LocalStore, home: Path, account: LocalAccount) -> Participant:
    """A fresh member process's `Participant`: its key, its partition, its state file under `home`."""
    index = setup.members.index(account)
    return Participant(
        account,
        world.client,
        store,
        setup.alliance_id,
        private_partition(CONFIG, index),
        setup.spec,
        behaviour=Behaviour(),
        state=MemberState(home, world.client.address, setup.alliance_id, account.address),
    )


def started_round(world, tmp_path: Path) -> tuple[Setup, LocalStore, list[LocalAccount]]:
    """An alliance of five whose first round takes vote commits: both proposers committed and uploaded."""
    store = LocalStore(tmp_path / "artifacts")
    setup = set_up(world.chain, world.client, world.staking.address, store, CONFIG, world.owner)
    proposers, voters = world.start(setup.alliance_id, setup.members)
    proposing = [member(world, setup, store, tmp_path, proposer) for proposer in proposers]
    for participant in proposing:
        assert participant.act()[0].startswith("committed update")
    assert world.client.phase(setup.alliance_id) == Phase.COMMITTING
    for participant in proposing:
        assert participant.act() == ["uploaded update"]  # proposals are closed: the bytes may go out now
    return setup, store, voters


def test_a_voter_restarted_after_committing_reveals_the_vote_it_committed(world, tmp_path: Path) -> None:
    setup, store, voters = started_round(world, tmp_path)
    first_run = member(world, setup, store, tmp_path, voters[0])
    (committed,) = first_run.act()
    assert committed.startswith("committed vote")

    restarted = member(world, setup, store, tmp_path, voters[0])  # the first run is gone, and its memory
    assert restarted.act() == [committed.replace("committed", "recalled committed")]  # no second commit
    for voter in voters[1:]:
        member(world, setup, store, tmp_path, voter).act()
    assert world.client.phase(setup.alliance_id) == Phase.REVEALING

    assert restarted.act() == [committed.replace("committed", "revealed")]
    vote = world.client.votes(setup.alliance_id, 1)[0]
    assert vote.voter == voters[0].address and vote.revealed
    assert restarted.act() == []


def test_a_vote_saved_but_never_sent_is_the_one_committed(world, tmp_path: Path) -> None:
    setup, store, voters = started_round(world, tmp_path)
    voter = voters[1]
    seed = world.client.round(setup.alliance_id, 1).seed
    state = MemberState(tmp_path, world.client.address, setup.alliance_id, voter.address)
    # Killed after writing its vote, before (or while) sending it: that salt may be on its way to the chain.
    saved = VoteRecord(1, seed, 0b10, b"\x05" * 32, b"\x07" * 32)
    state.save_vote(saved)
    assert state.vote(1, b"\x01" * 32) is None  # a record of another chain's round 1 never passes for this one

    assert member(world, setup, store, tmp_path, voter).act() == ["committed vote 0b10"]

    vote = world.client.votes(setup.alliance_id, 1)[1]
    assert vote.commitment == vote_commitment(saved.accept_mask, saved.model_hash, saved.salt, voter.address)
    assert state.path.stat().st_mode & 0o777 == 0o600  # the salt is a secret until the reveal
