"""One Arena task played by a fixed cast: honest nodes and every built-in adversary, on a local chain.

Three honest trainers with different hyper-parameters, a copycat (ada's leaked weights plus 1% noise),
a replay copycat and a junk trainer; four honest validators, a lazy one and a colluding pair that
inflates the junk trainer (with the lazy one, 2,600 of 6,600 validator COV: under half); and a
delegator behind ada, who charges 10% commission. The demo, the e2e test and the bench all play it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from covey.arena.adversaries import (
    ColludingValidator,
    CopycatTrainer,
    JunkTrainer,
    LazyValidator,
    ReplayCopycat,
    leak_from,
)
from covey.arena.base import Log, NodeBase
from covey.arena.client import ArenaClient, Deadlines, Phase
from covey.arena.creator import PostedTask, post_task
from covey.arena.trainer import Hyperparams, TrainerNode
from covey.arena.validator import ValidatorNode
from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.errors import ChainError
from covey.ml import TaskSpec, default_spec
from covey.storage import ArtifactStore

COV = 10**18
PHASES_S = (20, 5, 8, 5)
"""Seconds to commit, reveal, score and reveal scores: room for the cast's work in each phase (training ~3 s
here, ~4x that on a loaded 2-core machine), and short, because a local chain's clock follows wall time and
the story waits for each deadline in real time."""
COMMISSION_BPS = 1_000
REWARD_POOL = 1_000 * COV
MIN_TRAINER_STAKE = 100 * COV
MIN_VALIDATOR_STAKE = 500 * COV
PLAY_ORDER = (Phase.COMMITTING, Phase.REVEALING, Phase.SCORING, Phase.REVEALING_SCORES, Phase.FINALISABLE)


@dataclass
class Actor:
    """One account in the story: a name people read, a role, its stake and what it does."""

    name: str
    role: str  # creator, trainer, validator or delegator
    stake_cov: int = 0
    behaviour: str = "honest"
    account: LocalAccount = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Keys derived from the name: the same actors on every run (dev chains only: the faucet refuses others).
        self.account = Account.from_key(Web3.keccak(text=f"covey demo arena {self.name}"))

    @property
    def address(self) -> str:
        return str(self.account.address)


def cast() -> dict[str, Actor]:
    """The actors by name, in the order the tables list them."""
    actors = [
        Actor("creator", "creator", behaviour=""),
        Actor("ada", "trainer", 100),
        Actor("hopper", "trainer", 100),
        Actor("alan", "trainer", 100),
        Actor("copycat", "trainer", 100, "ada's leak +1% noise"),
        Actor("replayer", "trainer", 100, "replays ada's reveal"),
        Actor("junk", "trainer", 100, "random weights"),
        Actor("val-1", "validator", 1_000),
        Actor("val-2", "validator", 1_000),
        Actor("val-3", "validator", 1_000),
        Actor("val-4", "validator", 1_000),
        Actor("lazy", "validator", 1_000, "random scores"),
        Actor("colluder-1", "validator", 800, "inflates junk"),
        Actor("colluder-2", "validator", 800, "inflates junk"),
        Actor("delegator", "delegator", 1_000, "delegates to ada"),
    ]
    return {actor.name: actor for actor in actors}


HONEST_TRAINERS = ("ada", "hopper", "alan")
HONEST_VALIDATORS = ("val-1", "val-2", "val-3", "val-4")
ADVERSARIES = ("copycat", "replayer", "junk", "lazy", "colluder-1", "colluder-2")
HYPERPARAMS = {
    "ada": Hyperparams(epochs=20, lr=3e-3, architecture={"hidden_sizes": [128]}),
    "hopper": Hyperparams(epochs=12, lr=1e-2, architecture={"hidden_sizes": [64]}),
    "alan": Hyperparams(epochs=10, lr=3e-3, architecture={"hidden_sizes": [32]}),
}


def arena_address(chain: Chain, deployment: Deployment, deployer: LocalAccount) -> str:
    """The suite's Arena, deploying one onto the suite when this deployment predates it."""
    if "Arena" in deployment.contracts:
        return deployment.address("Arena")
    from covey.chain.arena_deploy import deploy_arena

    return deploy_arena(chain, deployment, deployer)


def fund_and_stake(chain: Chain, deployment: Deployment, client: ArenaClient, actors: dict[str, Actor]) -> None:
    """Fund every actor from the dev faucet, stake per role, delegate to ada and set ada's commission.

    Re-running tops up only what is missing, so the demo can play again on the same chain.
    """
    staking, token = client.staking, client.token
    for actor in actors.values():
        if int(token.functions.balanceOf(actor.address).call()) < 2_000 * COV:
            fund(chain, deployment, actor.address)
    for actor in actors.values():
        if actor.role in ("trainer", "validator"):
            missing = actor.stake_cov * COV - int(staking.functions.stakeOf(actor.address, role_of(actor)).call())
            if missing > 0:
                chain.transact(token.functions.approve(staking.address, missing), actor.account)
                chain.transact(staking.functions.stake(role_of(actor), missing), actor.account)
    ada, delegator = actors["ada"], actors["delegator"]
    delegated = int(staking.functions.delegationOf(delegator.address, ada.address, Role.TRAINER).call())
    missing = delegator.stake_cov * COV - delegated
    if missing > 0:
        chain.transact(token.functions.approve(staking.address, missing), delegator.account)
        chain.transact(staking.functions.delegate(ada.address, Role.TRAINER, missing), delegator.account)
    if int(staking.functions.commissionOf(ada.address).call()[0]) != COMMISSION_BPS:
        chain.transact(staking.functions.setCommission(COMMISSION_BPS), ada.account)
        chain.wait_until(int(staking.functions.commissionOf(ada.address).call()[2]))  # the commission delay


def role_of(actor: Actor) -> Role:
    return Role.TRAINER if actor.role == "trainer" else Role.VALIDATOR


def post(
    client: ArenaClient,
    store: ArtifactStore,
    home: Path,
    actors: dict[str, Actor],
    spec: TaskSpec | None = None,
    *,
    phases_s: Sequence[int] = PHASES_S,
) -> PostedTask:
    """The creator posts a task (default: digits): 1,000 COV, top 3 paid, the spec's baseline, tolerance 0.02.

    `phases_s` are the four phases' lengths in seconds (default `PHASES_S`, sized for digits).
    """
    return post_task(
        client,
        actors["creator"].account,
        store,
        home,
        spec or default_spec("digits"),
        reward_pool=REWARD_POOL,
        deadlines=Deadlines.after(client.now(), *phases_s),
        top_k=3,
        min_trainer_stake=MIN_TRAINER_STAKE,
        min_validator_stake=MIN_VALIDATOR_STAKE,
        tolerance=0.02,
    )


def build_nodes(
    client: ArenaClient,
    store: ArtifactStore,
    home: Path,
    actors: dict[str, Actor],
    log: Log | None = None,
    hyperparams: dict[str, Hyperparams] | None = None,
) -> list[NodeBase]:
    """The cast's nodes, in the order they act within a phase (honest trainers reveal before the replayer).

    `hyperparams` gives each honest trainer its own (default: `HYPERPARAMS`, MLP sizes for digits).
    """
    hyperparams = hyperparams or HYPERPARAMS

    def account(name: str) -> LocalAccount:
        return actors[name].account

    common: dict[str, Any] = {"store": store, "home": home, "log": log}
    trainers = {
        name: TrainerNode(client, account(name), hyperparams=hyperparams[name], name=name, **common)
        for name in HONEST_TRAINERS
    }
    favourite = actors["junk"].address
    return [
        *trainers.values(),
        CopycatTrainer(client, account("copycat"), leak=leak_from(trainers["ada"]), name="copycat", **common),
        ReplayCopycat(client, account("replayer"), name="replayer", **common),
        JunkTrainer(client, account("junk"), name="junk", **common),
        *(ValidatorNode(client, account(name), name=name, **common) for name in HONEST_VALIDATORS),
        LazyValidator(client, account("lazy"), name="lazy", **common),
        *(
            ColludingValidator(client, account(name), favourite=favourite, name=name, **common)
            for name in ("colluder-1", "colluder-2")
        ),
    ]


def play(
    client: ArenaClient,
    nodes: list[NodeBase],
    task_id: int,
    on_phase: Callable[[Phase], None] | None = None,
    *,
    advance: Callable[[int], object] | None = None,
) -> dict[str, float]:
    """Step every node through each phase, waiting for the next one to begin; seconds of work per phase.

    The wait is real (`Chain.wait_until`); `advance(timestamp)` replaces it, e.g. for a benchmark that
    times only the work and may move a throw-away chain's clock.
    """
    advance = advance or client.chain.wait_until
    seconds: dict[str, float] = {}
    for phase in PLAY_ORDER:
        advance(client.task(task_id).phase_deadline(phase))
        if on_phase is not None:
            on_phase(phase)
        started = time.perf_counter()
        task = client.task(task_id)
        for node in nodes:
            node.step(task, client.now())
        seconds[phase.label] = time.perf_counter() - started
    if not client.task(task_id).finalized:
        raise ChainError(f"task {task_id} is still not finalised after its last phase")
    return seconds


def balances(client: ArenaClient, actors: dict[str, Actor]) -> dict[str, dict[str, int]]:
    """Per address: COV in the wallet and COV at stake (self-stake for its role; the delegation for the delegator)."""
    staking, token = client.staking, client.token
    result = {}
    for actor in actors.values():
        if actor.role == "delegator":
            stake = int(staking.functions.delegationOf(actor.address, actors["ada"].address, Role.TRAINER).call())
        elif actor.role in ("trainer", "validator"):
            stake = int(staking.functions.stakeOf(actor.address, role_of(actor)).call())
        else:
            stake = 0
        result[actor.address] = {"cov": int(token.functions.balanceOf(actor.address).call()), "stake": stake}
    return result


def claim_delegation(client: ArenaClient, actors: dict[str, Actor]) -> int:
    """The delegator claims its share of ada's rewards; returns the COV claimed."""
    delegator, ada = actors["delegator"], actors["ada"]
    pending = int(client.staking.functions.pendingRewards(delegator.address, ada.address, Role.TRAINER).call())
    if pending > 0:
        client.chain.transact(client.staking.functions.claimRewards(ada.address, Role.TRAINER), delegator.account)
    return pending


def staking_flows(client: ArenaClient, first_block: int) -> dict[str, dict[str, int]]:
    """Per account, what the Arena moved through the Staking since `first_block`: reward, commission, slashed."""
    flows: dict[str, dict[str, int]] = {}

    def entry(address: str) -> dict[str, int]:
        return flows.setdefault(address, {"reward": 0, "commission": 0, "slashed": 0})

    events = client.staking.events
    for event in events.RewardDistributed().get_logs(from_block=first_block):
        if event["args"]["module"] == client.address:
            entry(event["args"]["operator"])["reward"] += int(event["args"]["amount"])
            entry(event["args"]["operator"])["commission"] += int(event["args"]["commission"])
    for event in events.Slashed().get_logs(from_block=first_block):
        if event["args"]["module"] == client.address:
            entry(event["args"]["account"])["slashed"] += int(event["args"]["amount"])
    return flows
