"""Runs an alliance end to end: members staked and joined, rounds opened, played, finalised and reported.

Two modes share everything but where participants live:
- `run_in_process`: every `Participant` in this process, stepped in turn (tests, the demo, benchmarks);
  when nobody acts, only a deadline can end the phase, so it is waited for outright (in real time).
- `run_processes` (`covey alliance run`): one OS process per participant (`covey.alliance.worker`), each
  loading only its own partition, against a JSON-RPC chain (`covey chain serve`, started if needed).
This process coordinates either way: it opens, starts and finalises rounds (anyone may) and reports
accuracy on a held-out set that only it holds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from covey.alliance.client import AllianceClient, AllianceParams, Phase
from covey.alliance.ledger import ModelLedger
from covey.alliance.participant import Behaviour, Participant
from covey.alliance.privacy import DPConfig
from covey.alliance.rules import min_proposers, rule_id
from covey.alliance.spec import AllianceSpec
from covey.alliance.worker import KEY_ENV as WORKER_KEY_ENV
from covey.chain.alliance_deploy import ensure_alliance
from covey.chain.chain import Chain, dev_accounts
from covey.chain.deploy import Deployment, deploy_suite, load_deployment
from covey.chain.roles import Role
from covey.config import Settings
from covey.errors import ChainError, ValidationError
from covey.ml import evaluate, unflatten
from covey.ml.datasets import Dataset, load_split
from covey.storage import ArtifactStore, open_store

COV = 10**18
GAS_MONEY_WEI = 10**18
IDLE_POLL_S = 0.2
STOP_TIMEOUT_S = 10.0
WORKER_EXIT_TIMEOUT_S = 60.0
WORKER_START_TIMEOUT_S = 180.0

SplitKind = Literal["iid", "dirichlet"]


@dataclass(frozen=True)
class RunConfig:
    """One alliance run: the data and how it is split, the members' behaviours, the alliance's parameters."""

    dataset: str = "breast_cancer"
    behaviours: tuple[str, ...] = ("honest", "honest", "honest", "honest", "honest", "sign_flip")
    split: SplitKind = "iid"
    alpha: float = 0.5
    rounds: int = 3
    proposers: int = 2
    voters: int = 3
    rule: str = "covey_default"
    stake_cov: int = 100
    stakes_cov: tuple[int, ...] = ()  # per member, overriding `stake_cov` (e.g. an attacker staking more)
    min_stake_cov: int = 100
    pool_cov: int = 1_000
    slash_bps: int = 5_000
    phase_s: int = 60
    local_epochs: int = 1
    lr: float = 0.02
    seed: int = 0
    dp_noise_multiplier: float | None = None  # set to train every member with DP-SGD (opacus)
    dp_max_grad_norm: float = 1.0
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.proposers + self.voters > len(self.behaviours):
            raise ValidationError(
                f"a round draws {self.proposers} proposers and {self.voters} voters, "
                f"but only {len(self.behaviours)} members join"
            )
        for name in self.behaviours:
            Behaviour.named(name)  # a typo fails here, before anything is staked
        if self.stakes_cov and len(self.stakes_cov) != len(self.behaviours):
            raise ValidationError(f"stakes_cov has {len(self.stakes_cov)} entries for {len(self.behaviours)} members")
        fewest = min_proposers(rule_id(self.rule))
        if self.proposers < fewest:
            raise ValidationError(
                f"{self.rule} needs at least {fewest} proposers a round, got {self.proposers}: "
                "with fewer, one poisoner's update can turn the aggregate it is judged against"
            )

    def stake_of(self, index: int) -> int:
        """Member `index`'s stake in COV wei."""
        return (self.stakes_cov[index] if self.stakes_cov else self.stake_cov) * COV

    def privacy(self) -> DPConfig | None:
        """The members' DP-SGD settings, or None when they train without differential privacy."""
        if self.dp_noise_multiplier is None:
            return None
        return DPConfig(self.dp_noise_multiplier, self.dp_max_grad_norm, self.dp_delta)

    def spec(self) -> AllianceSpec:
        return AllianceSpec.for_dataset(self.dataset, local_epochs=self.local_epochs, lr=self.lr)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        data["behaviours"] = tuple(data["behaviours"])
        data["stakes_cov"] = tuple(data["stakes_cov"])
        return cls(**data)


def private_partition(config: RunConfig, index: int) -> Dataset:
    """Member `index`'s private training data: its share of the public-train split, IID or Dirichlet(alpha).

    Called inside the member's own process in `run_processes`; nothing else ever holds it there.
    """
    train = load_split(config.dataset, seed=config.seed).public_train
    count = len(config.behaviours)
    if config.split == "iid":
        parts = train.partition_iid(count, config.seed)
    else:
        parts = train.partition_dirichlet(count, config.alpha, config.seed, min_part_size=10)
    return train.subset(parts[index])


def held_out_set(config: RunConfig) -> Dataset:
    """The coordinator's test set (the split's validation half), never given to any member."""
    return load_split(config.dataset, seed=config.seed).private_validation


# -- reports ------------------------------------------------------------------------------------------


@dataclass
class RoundReport:
    """What one round did; `accuracy` is the model after the round on the held-out set (None for the closing round)."""

    alliance_id: int
    round: int
    proposers: list[str]
    voters: list[str]
    accepted: list[str]
    rejected: list[str]
    rewards: dict[str, int]
    slashes: dict[str, int]
    model_confirmed: bool
    accuracy: float | None
    seconds: float


@dataclass
class MemberReport:
    address: str
    behaviour: str
    stake_before: int
    stake_after: int
    rewarded: int = 0
    slashed: int = 0
    privacy_spent: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class AllianceRun:
    """The whole run: the alliance, per-round reports, per-member totals and the accuracy before and after."""

    alliance_id: int
    alliance_address: str
    initial_accuracy: float
    rounds: list[RoundReport]
    members: list[MemberReport]

    @property
    def final_accuracy(self) -> float:
        scored = [r.accuracy for r in self.rounds if r.accuracy is not None]
        return scored[-1] if scored else self.initial_accuracy

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "final_accuracy": self.final_accuracy}


# -- setting up ---------------------------------------------------------------------------------------


@dataclass
class Setup:
    """An alliance ready to run: its client, id, spec, and the members' keys in join order."""

    client: AllianceClient
    alliance_id: int
    spec: AllianceSpec
    members: list[LocalAccount]
    coordinator: LocalAccount


def set_up(
    chain: Chain,
    client: AllianceClient,
    staking_address: str,
    store: ArtifactStore,
    config: RunConfig,
    funder: LocalAccount,
    *,
    members: Sequence[LocalAccount] | None = None,
) -> Setup:
    """Publish the spec and initial model, create the alliance funded by `funder`, and have members stake and join.

    `funder` pays the pool, the members' stake and (on a dev chain) their gas money; new random keys are
    made for members unless `members` is given.
    """
    spec = config.spec()
    spec_ref = store.put(spec.to_bytes())
    model_ref = store.put(spec.initial_model_bytes())
    accounts = list(members) if members is not None else [Account.create() for _ in config.behaviours]
    token = client.token
    staking = chain.contract("Staking", staking_address)
    for index, account in enumerate(accounts):
        stake = config.stake_of(index)
        if chain.is_local and chain.balance(account.address) < GAS_MONEY_WEI // 2:
            chain.send_eth(funder, account.address, GAS_MONEY_WEI)
        chain.transact(token.functions.transfer(account.address, stake), funder)
        chain.transact(token.functions.approve(staking.address, stake), account)
        chain.transact(staking.functions.stake(int(Role.PARTICIPANT), stake), account)
    params = AllianceParams(
        spec_hash=spec_ref.bytes32,
        initial_model_hash=model_ref.bytes32,
        reward_pool=config.pool_cov * COV,
        rounds=config.rounds,
        proposers_per_round=config.proposers,
        voters_per_round=config.voters,
        min_stake=config.min_stake_cov * COV,
        slash_bps=config.slash_bps,
        propose_duration_s=config.phase_s,
        commit_duration_s=config.phase_s,
        reveal_duration_s=config.phase_s,
        rule_id=rule_id(config.rule),
    )
    alliance_id = client.create(params, funder)
    for account in accounts:
        client.join(alliance_id, account)
    return Setup(client, alliance_id, spec, accounts, funder)


# -- driving rounds -----------------------------------------------------------------------------------


Tick = Callable[[], bool]
"""One pass over whatever acts between chain checks; True if anything happened."""


def play_round(
    setup: Setup, tick: Tick, *, all_in_process: bool, on_phase: Callable[[Phase], None] | None = None
) -> TxReceipt:
    """Open, start, let `tick` act until the round is finalisable, then finalise it; returns the receipt."""
    client, alliance_id = setup.client, setup.alliance_id
    client.open_round(alliance_id, setup.coordinator)
    while not client.start_round(alliance_id, setup.coordinator):
        pass  # the randomness block aged out (only after 256 idle blocks): it re-armed, so start again
    last_phase: Phase | None = None
    while True:
        phase = client.phase(alliance_id)
        if phase != last_phase and on_phase is not None:
            on_phase(phase)
        last_phase = phase
        if phase == Phase.FINALISABLE:
            return client.finalize_round(alliance_id, setup.coordinator)
        if tick():
            continue
        if client.phase(alliance_id) != phase:
            continue
        _wait_for_deadline(client, alliance_id, phase, nobody_else=all_in_process)


def _wait_for_deadline(client: AllianceClient, alliance_id: int, phase: Phase, *, nobody_else: bool) -> None:
    """Nobody here acted: wait in real time for the phase's deadline (the clock is never moved).

    When `nobody_else` can act either (every participant is in this process) only the deadline can end
    the phase, so wait for it outright. Otherwise poll, and once a deadline has passed on a chain that
    mines only on demand, mine one empty block: with a member silent nobody else may send a transaction,
    and contracts, gas estimates and anyone reading the latest block would see the phase run on forever.
    """
    info = client.round(alliance_id, client.alliance(alliance_id).current_round)
    deadline = {Phase.PROPOSING: info.propose_end, Phase.COMMITTING: info.commit_end}.get(phase, info.reveal_end)
    if phase not in (Phase.PROPOSING, Phase.COMMITTING, Phase.REVEALING):
        time.sleep(IDLE_POLL_S)
    elif nobody_else:
        client.chain.wait_until(deadline)
    elif not client.catch_up_clock(alliance_id):
        time.sleep(IDLE_POLL_S)


def report_round(
    setup: Setup, round_number: int, receipt: TxReceipt, accuracy: float | None, seconds: float
) -> RoundReport:
    client, alliance_id = setup.client, setup.alliance_id
    proposers, voters = client.committee(alliance_id, round_number)
    info = client.round(alliance_id, round_number)
    rewards: dict[str, int] = {}
    for event in client.events("Rewarded", receipt):
        rewards[event["account"]] = rewards.get(event["account"], 0) + int(event["amount"])
    slashes: dict[str, int] = {}
    for event in client.events("Slashed", receipt):
        slashes[event["account"]] = slashes.get(event["account"], 0) + int(event["slashed"])
    return RoundReport(
        alliance_id=alliance_id,
        round=round_number,
        proposers=proposers,
        voters=voters,
        accepted=[a for i, a in enumerate(proposers) if info.accepted_mask >> i & 1],
        rejected=[a for i, a in enumerate(proposers) if info.rejected_mask >> i & 1],
        rewards=rewards,
        slashes=slashes,
        model_confirmed=info.model_confirmed,
        accuracy=accuracy,
        seconds=round(seconds, 3),
    )


def model_accuracy(spec: AllianceSpec, vector: np.ndarray, test_set: Dataset) -> float:
    """Accuracy of the flat model `vector` on `test_set`."""
    return evaluate(unflatten(spec.build_model(), vector.astype(np.float32)), test_set, "accuracy")


def drive(
    setup: Setup,
    config: RunConfig,
    store: ArtifactStore,
    tick: Tick,
    behaviours: Sequence[str],
    *,
    all_in_process: bool,
    on_round: Callable[[RoundReport], None] | None = None,
    on_phase: Callable[[int, Phase], None] | None = None,
) -> AllianceRun:
    """Play every training round and the closing round; report each, and the members' stake before and after."""
    client, alliance_id = setup.client, setup.alliance_id
    staking = client.chain.contract("Staking", client.contract.functions.staking().call())
    role = int(Role.PARTICIPANT)

    def stake_of(account: LocalAccount) -> int:
        return int(staking.functions.effectiveStake(account.address, role).call())

    members = [
        MemberReport(account.address, name, stake_of(account), 0)
        for account, name in zip(setup.members, behaviours, strict=True)
    ]
    ledger = ModelLedger(client, store, alliance_id, publish=False)
    test_set = held_out_set(config)
    initial_accuracy = model_accuracy(setup.spec, ledger.model_for_round(1), test_set)
    reports: list[RoundReport] = []
    for round_number in range(1, config.rounds + 2):
        started = time.perf_counter()
        phase_hook = (lambda phase, r=round_number: on_phase(r, phase)) if on_phase else None
        receipt = play_round(setup, tick, all_in_process=all_in_process, on_phase=phase_hook)
        accuracy = None
        if round_number <= config.rounds:
            accuracy = model_accuracy(setup.spec, ledger.model_for_round(round_number + 1), test_set)
        report = report_round(setup, round_number, receipt, accuracy, time.perf_counter() - started)
        reports.append(report)
        if on_round is not None:
            on_round(report)
    by_address = {member.address: member for member in members}
    for report in reports:
        for address, amount in report.rewards.items():
            by_address[address].rewarded += amount
        for address, amount in report.slashes.items():
            by_address[address].slashed += amount
    for member, account in zip(members, setup.members, strict=True):
        member.stake_after = stake_of(account)
    return AllianceRun(alliance_id, client.address, initial_accuracy, reports, members)


def run_in_process(
    chain: Chain,
    client: AllianceClient,
    staking_address: str,
    store: ArtifactStore,
    config: RunConfig,
    funder: LocalAccount,
    *,
    on_round: Callable[[RoundReport], None] | None = None,
    on_phase: Callable[[int, Phase], None] | None = None,
) -> tuple[AllianceRun, list[Participant]]:
    """Run the whole alliance with every participant in this process; returns the report and the participants."""
    setup = set_up(chain, client, staking_address, store, config, funder)
    participants = [
        Participant(
            account,
            client,
            store,
            setup.alliance_id,
            private_partition(config, index),
            setup.spec,
            behaviour=Behaviour.named(name),
            privacy=config.privacy(),
        )
        for index, (account, name) in enumerate(zip(setup.members, config.behaviours, strict=True))
    ]

    def tick() -> bool:
        acted = False
        for participant in participants:
            acted = bool(participant.act()) or acted
        return acted

    run = drive(
        setup, config, store, tick, config.behaviours, all_in_process=True, on_round=on_round, on_phase=on_phase
    )
    for member, participant in zip(run.members, participants, strict=True):
        member.privacy_spent = list(participant.privacy_spent)
    return run, participants


def check_attackers_slashed(run: AllianceRun) -> list[str]:
    """The attackers (by behaviour) that ended the run with less stake than they started with."""
    return [m.address for m in run.members if m.behaviour != "honest" and m.stake_after < m.stake_before]


# -- separate processes -------------------------------------------------------------------------------


@dataclass
class ServedChain:
    """A JSON-RPC URL for the run, and the `covey chain serve` process this run started (None if it found one)."""

    url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()


def serve_chain(settings: Settings, timeout_s: float = 60.0) -> ServedChain:
    """The chain every member process can reach: `COVEY_RPC_URL`, a running `covey chain serve`, or one started now."""
    if settings.rpc_url:
        return ServedChain(settings.rpc_url)
    from covey.chain._embedded import running_server_url

    chain_dir = settings.subdir("chain")
    url = running_server_url(chain_dir)
    if url:
        return ServedChain(url)
    command = [sys.executable, "-m", "covey.cli", "chain", "serve", "--port", str(_free_port())]
    env = {**os.environ, "COVEY_HOME": str(settings.data_dir)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()
            raise ChainError(f"`covey chain serve` exited with code {process.returncode}: {error}")
        url = running_server_url(chain_dir)
        if url:
            return ServedChain(url, process)
        time.sleep(IDLE_POLL_S)
    process.terminate()
    raise ChainError(f"`covey chain serve` did not answer within {timeout_s:.0f}s")


def run_processes(
    config: RunConfig,
    settings: Settings,
    *,
    on_round: Callable[[RoundReport], None] | None = None,
    on_phase: Callable[[int, Phase], None] | None = None,
) -> AllianceRun:
    """Run the alliance with each member in its own OS process against a served chain (dev chains: dev0 funds it).

    Members are `python -m covey.alliance.worker` processes, each given only its key (by environment) and
    its partition index; their logs and results go to `COVEY_HOME/alliance-runs/<alliance>-<id>/`.
    """
    served = serve_chain(settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        chain = Chain.from_rpc(served.url)
        if not chain.is_local:
            raise ChainError("`covey alliance run` funds members from the dev account dev0: use a local chain")
        funder = dev_accounts(1)[0]
        deployment = _deployment(chain, funder)
        client = AllianceClient(chain, ensure_alliance(chain, deployment, funder))
        store = open_store(settings.store_url, settings.data_dir)
        setup = set_up(chain, client, deployment.address("Staking"), store, config, funder)
        run_dir = settings.subdir(f"alliance-runs/{client.address[2:10].lower()}-{setup.alliance_id}")
        for index, account in enumerate(setup.members):
            workers.append(_start_worker(served.url, setup, config, index, account, settings, run_dir))
        _wait_until_ready(workers, [run_dir / f"member-{index}.ready" for index in range(len(workers))])

        def tick() -> bool:
            return False  # the members act in their own processes; this one only watches and finalises

        run = drive(
            setup, config, store, tick, config.behaviours, all_in_process=False, on_round=on_round, on_phase=on_phase
        )
        for worker in workers:
            worker.wait(timeout=WORKER_EXIT_TIMEOUT_S)
        for index, member in enumerate(run.members):
            result = run_dir / f"member-{index}.json"
            if result.exists():
                member.privacy_spent = [tuple(pair) for pair in json.loads(result.read_text())["privacySpent"]]
        return run
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        served.stop()


def _deployment(chain: Chain, deployer: LocalAccount) -> Deployment:
    try:
        return load_deployment(chain)
    except ChainError:
        return deploy_suite(chain, deployer)


def _start_worker(
    url: str, setup: Setup, config: RunConfig, index: int, account: LocalAccount, settings: Settings, run_dir: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "covey.alliance.worker",
        "--rpc",
        url,
        "--alliance",
        setup.client.address,
        "--id",
        str(setup.alliance_id),
        "--index",
        str(index),
        "--config",
        config.to_json(),
        "--result",
        str(run_dir / f"member-{index}.json"),
        "--ready",
        str(run_dir / f"member-{index}.ready"),
    ]
    if settings.store_url:
        command += ["--store", settings.store_url]
    env = {
        **os.environ,
        "COVEY_HOME": str(settings.data_dir),
        WORKER_KEY_ENV: account.key.hex(),
        "PYTHONUNBUFFERED": "1",
    }
    log = (run_dir / f"member-{index}.log").open("ab")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_ready(workers: Sequence[subprocess.Popen[bytes]], ready_files: Sequence[Path]) -> None:
    """Block until every member process has loaded its data (rounds must not start without them)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not all(path.exists() for path in ready_files):
        for index, worker in enumerate(workers):
            if worker.poll() is not None:
                raise ValidationError(
                    f"member process {index} exited with code {worker.returncode} before it was ready"
                )
        if time.monotonic() > deadline:
            raise ValidationError(f"member processes were not ready within {WORKER_START_TIMEOUT_S:.0f}s")
        time.sleep(IDLE_POLL_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
