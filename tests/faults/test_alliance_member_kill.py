"""SIGKILL alliance members mid-round: the round closes by its deadlines, the rules settle them, the next round runs.

Five member processes (`python -m covey.alliance.worker`, as `covey alliance run` starts them) share a
`covey chain serve` chain and an artifact store; this process coordinates (opens, starts and finalises
rounds) as `covey alliance run` does. With two proposers and three voters a round, every member is drawn in
the training round. In it:

- voter "silent" is SIGKILLed as the round starts, before it has done anything, and stays dead until the
  round's reveals are over: it is slashed `penalty` as a voter who never revealed and earns nothing;
- voter "restarted" is SIGKILLed right after it committed its vote (the commit phase is still open: it
  waits for the silent voter) and started again at once, with the same key.

Both come back before the closing round, which runs with all five. Then: every round was finalised and the
alliance completed; nobody was rewarded or slashed twice in a round; each member's wallet holds exactly its
rewards and its stake lost exactly its slashes; the Alliance holds none of the pool any more.

A silent member must not stall the alliance on a chain that mines only on demand (the embedded chain,
anvil): once the live members have acted nobody else sends a transaction, so the latest block's time never
passes a phase deadline by itself. Members read the phase as the next transaction will see it and the
coordinator mines one empty block once a deadline has passed; this test only watches, and records every
phase that the latest block still showed running well past its deadline. A restarted voter must reveal
what it committed before it was killed: members write their vote and salt to disk before committing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from covey.alliance.client import AllianceClient, Phase
from covey.alliance.runner import AllianceRun, RunConfig, _start_worker, drive, set_up
from covey.chain import Chain, dev_accounts
from covey.chain.alliance_deploy import ensure_alliance
from covey.chain.deploy import deploy_suite
from covey.config import get_settings
from covey.storage import LocalStore
from tests.support import REPO_ROOT

from .conftest import Service, chain_server, wait_for

pytestmark = pytest.mark.e2e

COV = 10**18
PHASE_S = 12  # each phase's length: a dead member holds the round up this long
MEMBERS = 5
STAKE_COV = 200  # a penalty (half the minimum stake) leaves a slashed member eligible for the next round
WORKER_READY_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 300.0  # the whole alliance, members' start included
STALL_GRACE_S = 5.0  # how long past its deadline a phase may still read as running before it counts as stalled


@dataclass
class Outcome:
    """What happened, for the tests to check."""

    client: AllianceClient
    alliance_id: int
    run: AllianceRun
    silent: str
    restarted: str
    penalty: int
    phase_when_killed: Phase
    stalls: list[tuple[int, str]]
    exit_codes: dict[str, int]
    wallets: dict[str, int]
    pool_held_before: int
    pool_held_after: int
    seconds: float
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def member_log(run_dir: Path, index: int) -> list[dict[str, Any]]:
    path = run_dir / f"member-{index}.log"
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory for the module (the per-test `covey_home` comes too late for a module fixture)."""
    home = tmp_path_factory.mktemp("alliance-home")
    shared_cache = REPO_ROOT / ".pytest_cache" / "covey-contracts"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir()
    os.symlink(shared_cache, home / "cache" / "contracts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        patch.delenv("COVEY_RPC_URL", raising=False)
        patch.delenv("COVEY_STORE_URL", raising=False)
        yield home


@pytest.fixture(scope="module")
def outcome(home: Path) -> Iterator[Outcome]:
    started = time.monotonic()
    settings = get_settings()
    config = RunConfig(
        behaviours=("honest",) * MEMBERS, rounds=1, proposers=2, voters=3, phase_s=PHASE_S, stake_cov=STAKE_COV
    )
    with chain_server(home, home / "chain.log") as (_server, url):
        chain = Chain.from_rpc(url)
        funder = dev_accounts(1)[0]
        deployment = deploy_suite(chain, funder)
        client = AllianceClient(chain, ensure_alliance(chain, deployment, funder))
        store = LocalStore(settings.data_dir / "artifacts")
        pool_held_before = int(client.token.functions.balanceOf(client.address).call())
        setup = set_up(chain, client, deployment.address("Staking"), store, config, funder)
        run_dir = settings.subdir(f"alliance-runs/faults-{setup.alliance_id}")
        index_of = {account.address: index for index, account in enumerate(setup.members)}
        workers: dict[int, Service] = {}

        def start(index: int) -> None:
            (run_dir / f"member-{index}.ready").unlink(missing_ok=True)
            process = _start_worker(url, setup, config, index, setup.members[index], settings, run_dir)
            workers[index] = Service(f"member {index}", process, run_dir / f"member-{index}.log")

        def ready(*indexes: int) -> None:
            wait_for(
                lambda: (
                    all((run_dir / f"member-{i}.ready").exists() for i in indexes)
                    or any(not workers[i].alive for i in indexes)
                ),
                "member processes to load their data",
                WORKER_READY_TIMEOUT_S,
            )
            assert all(workers[i].alive for i in indexes), [workers[i].tail() for i in indexes]

        roles: dict[str, Any] = {}
        stalls: list[tuple[int, str]] = []

        def tick() -> bool:
            """The coordinator's idle moment: note a phase that the latest block shows running past its deadline.

            Contracts, gas estimates and anyone reading the latest block see only its time: if nothing mined a
            block once a deadline passed, the phase would seem to run on there. This only watches.
            """
            assert time.monotonic() - started < RUN_TIMEOUT_S, f"the alliance did not complete in {RUN_TIMEOUT_S}s"
            phase = client.phase(setup.alliance_id, block="latest")
            if phase not in (Phase.PROPOSING, Phase.COMMITTING, Phase.REVEALING):
                return False
            number = client.alliance(setup.alliance_id).current_round
            info = client.round(setup.alliance_id, number)
            deadline = {Phase.PROPOSING: info.propose_end, Phase.COMMITTING: info.commit_end}.get(
                phase, info.reveal_end
            )
            if time.time() - deadline > STALL_GRACE_S and (number, phase.name) not in stalls:
                stalls.append((number, phase.name))
            return False

        def on_phase(round_number: int, phase: Phase) -> None:
            """The faults, injected as the coordinator sees the training round's phases go by."""
            if round_number != 1:
                return
            if phase in (Phase.PROPOSING, Phase.COMMITTING) and not roles:
                _proposers, voters = client.committee(setup.alliance_id, 1)
                roles.update(restarted=voters[0], silent=voters[2])
                workers[index_of[roles["silent"]]].sigkill()  # dead before it could do anything
                restarted = index_of[roles["restarted"]]
                wait_for(
                    lambda: any("committed vote" in line.get("action", "") for line in member_log(run_dir, restarted)),
                    "the voter to commit its vote",
                    3 * PHASE_S + 60,
                )
                roles["phase_when_killed"] = client.phase(setup.alliance_id)
                workers[restarted].sigkill()
                start(restarted)  # back at once, with the same key and data
            elif phase >= Phase.REVEALING and "silent_back" not in roles:
                roles["silent_back"] = True
                start(index_of[roles["silent"]])  # too late to vote this round; back for the next
            if phase == Phase.FINALISABLE:
                ready(index_of[roles["silent"]], index_of[roles["restarted"]])  # both up before the next round

        try:
            for index in range(MEMBERS):
                start(index)
            ready(*range(MEMBERS))
            run = drive(setup, config, store, tick, config.behaviours, all_in_process=False, on_phase=on_phase)
            exit_codes: dict[str, int] = {}
            for index, worker in workers.items():
                worker.process.wait(timeout=60)  # members stop on their own once the alliance is complete
                exit_codes[setup.members[index].address] = worker.process.returncode
        finally:
            for worker in workers.values():
                worker.stop()
        contract = client.contract
        events = {
            name: [dict(e["args"]) for e in getattr(contract.events, name)().get_logs(from_block=0)]
            for name in ("Rewarded", "Slashed", "VoteRevealed", "RoundFinalized", "AllianceCompleted")
        }
        yield Outcome(
            client=client,
            alliance_id=setup.alliance_id,
            run=run,
            silent=roles["silent"],
            restarted=roles["restarted"],
            penalty=client.alliance(setup.alliance_id).penalty,
            phase_when_killed=roles["phase_when_killed"],
            stalls=stalls,
            exit_codes=exit_codes,
            wallets={a.address: int(client.token.functions.balanceOf(a.address).call()) for a in setup.members},
            pool_held_before=pool_held_before,
            pool_held_after=int(client.token.functions.balanceOf(client.address).call()),
            seconds=time.monotonic() - started,
            events={name: [e for e in found if e["allianceId"] == setup.alliance_id] for name, found in events.items()},
        )


def test_a_round_with_killed_members_closes_and_the_next_round_runs(outcome: Outcome) -> None:
    """With blocks coming (as on any chain with a block time), the round closes by its deadlines."""
    run, events = outcome.run, outcome.events
    assert outcome.phase_when_killed == Phase.COMMITTING  # the restarted voter died with its vote committed

    # Both rounds were finalised and the alliance completed, with every member process ending cleanly.
    assert [int(e["round"]) for e in events["RoundFinalized"]] == [1, 2]
    assert len(events["AllianceCompleted"]) == 1
    assert outcome.client.phase(outcome.alliance_id) == Phase.COMPLETE
    assert set(outcome.exit_codes.values()) == {0}, outcome.exit_codes

    # The member that stayed dead through the round: slashed the penalty as silent, paid nothing.
    silent_slashes = [e for e in events["Slashed"] if e["account"] == outcome.silent and e["round"] == 1]
    assert [(e["slashed"], e["reason"]) for e in silent_slashes] == [(outcome.penalty, "alliance: vote not revealed")]
    assert not [e for e in events["Rewarded"] if e["account"] == outcome.silent and e["round"] == 1]

    # The closing round ran with everyone back: nobody drawn in it was slashed.
    assert not [e for e in events["Slashed"] if e["round"] == 2]
    assert run.rounds[-1].model_confirmed

    # Nobody paid or slashed twice in a round; wallets hold exactly the rewards, stakes lost exactly the slashes.
    assert max(Counter((e["round"], e["account"]) for e in events["Rewarded"]).values(), default=1) == 1
    assert max(Counter((e["round"], e["account"]) for e in events["Slashed"]).values()) == 1
    for member in run.members:
        rewarded = sum(int(e["amount"]) for e in events["Rewarded"] if e["account"] == member.address)
        slashed = sum(int(e["slashed"]) for e in events["Slashed"] if e["account"] == member.address)
        assert outcome.wallets[member.address] == rewarded == member.rewarded, member
        assert member.stake_after == member.stake_before - slashed, member
    # The pool was paid out or refunded to the creator: the Alliance keeps none of it.
    assert outcome.pool_held_after == outcome.pool_held_before
    assert outcome.client.alliance(outcome.alliance_id).reward_pool == 0
    rounds_s = [r.seconds for r in run.rounds]
    print(f"\nalliance member kill: {outcome.seconds:.0f}s; rounds took {rounds_s}s; stalled phases {outcome.stalls}")


def test_a_round_with_a_silent_member_ends_at_its_deadline_without_help(outcome: Outcome) -> None:
    assert outcome.stalls == []


def test_a_voter_restarted_after_committing_reveals_its_vote(outcome: Outcome) -> None:
    revealed = [e for e in outcome.events["VoteRevealed"] if e["voter"] == outcome.restarted and e["round"] == 1]
    assert len(revealed) == 1
    assert not [e for e in outcome.events["Slashed"] if e["account"] == outcome.restarted and e["round"] == 1]
