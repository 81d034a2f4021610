"""Fixtures for the Arena contract: a fresh suite with the Arena wired in, and a `World` of helpers for stories.

A story creates a task, lets staked trainers commit and reveal, staked validators commit and reveal
scores, travels through the deadlines with `chain.increase_time`, and checks balances and events.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from covey.chain import Chain
from covey.chain.arena_deploy import deploy_arena, scores_commitment, submission_commitment
from covey.chain.deploy import Deployment, deploy_suite
from tests.support import Transactor, dev_keys

COV = 10**18
SCORE = 10**6  # scores carry 6 decimals
TRAINER, VALIDATOR = 0, 1
PHASE_S = 100  # seconds per phase in test tasks
MIN_TRAINER_STAKE = 100 * COV
MIN_VALIDATOR_STAKE = 1_000 * COV
TRAINER_PENALTY = MIN_TRAINER_STAKE // 2
VALIDATOR_PENALTY = MIN_VALIDATOR_STAKE // 2
COMMISSION_DELAY_S = 10
GAS_MONEY_WEI = 10**18
PRE_FUNDED_ACCOUNTS = 10  # the dev accounts every backend funds at genesis


def weights_of(label: str) -> bytes:
    """A stand-in weights hash for a model called `label`."""
    return bytes(Web3.keccak(text=f"weights:{label}"))


@dataclass(frozen=True)
class Task:
    """A created task: its id and its four deadlines (timestamps)."""

    id: int
    submit: int
    reveal: int
    score_commit: int
    score_reveal: int
    pool: int


@dataclass
class World(Transactor):
    """The suite, the Arena, the owner (deployer) and as many other funded dev accounts as a story needs."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    cov: Contract
    staking: Contract
    treasury: Contract
    arena: Contract
    salts: dict[tuple[int, str], bytes] = field(default_factory=dict)
    _handed_out: int = 0

    # -- people -------------------------------------------------------------------------------------

    def people(self, count: int) -> list[LocalAccount]:
        """`count` dev accounts no earlier call handed out (never the owner), each with gas money."""
        first = 1 + self._handed_out
        self._handed_out += count
        accounts = list(dev_keys(first + count)[first:])
        for index, account in enumerate(accounts, start=first):
            if index >= PRE_FUNDED_ACCOUNTS:
                self.chain.send_eth(self.owner, account.address, GAS_MONEY_WEI)
        return accounts

    def trainers(self, count: int, stake: int = MIN_TRAINER_STAKE) -> list[LocalAccount]:
        """`count` new people, each with `stake` COV self-staked as a trainer."""
        accounts = self.people(count)
        for account in accounts:
            self.stake(account, TRAINER, stake)
        return accounts

    def validators(self, count: int, stake: int = MIN_VALIDATOR_STAKE) -> list[LocalAccount]:
        """`count` new people, each with `stake` COV self-staked as a validator."""
        accounts = self.people(count)
        for account in accounts:
            self.stake(account, VALIDATOR, stake)
        return accounts

    # -- transactions -------------------------------------------------------------------------------

    def events(self, name: str, receipt: TxReceipt, contract: Contract | None = None) -> list[dict[str, Any]]:
        """The decoded `name` events in `receipt` (from the Arena unless `contract` is given), as dicts."""
        source = contract if contract is not None else self.arena
        logs = getattr(source.events, name)().process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]

    # -- money and stake ----------------------------------------------------------------------------

    def balance(self, address: str) -> int:
        return int(self.cov.functions.balanceOf(address).call())

    def give_cov(self, account: LocalAccount, amount: int) -> None:
        self.give_cov_to(account.address, amount)

    def give_cov_to(self, address: str, amount: int) -> None:
        """Hand `amount` wei of COV from the owner's genesis allocation to `address`."""
        self.send(self.cov.functions.transfer(address, amount), self.owner)

    def stake(self, account: LocalAccount, role: int, amount: int) -> None:
        self.give_cov(account, amount)
        self.send(self.cov.functions.approve(self.staking.address, amount), account)
        self.send(self.staking.functions.stake(role, amount), account)

    def delegate(self, delegator: LocalAccount, operator: LocalAccount, role: int, amount: int) -> None:
        self.give_cov(delegator, amount)
        self.send(self.cov.functions.approve(self.staking.address, amount), delegator)
        self.send(self.staking.functions.delegate(operator.address, role, amount), delegator)

    def effective_stake(self, account: LocalAccount, role: int) -> int:
        return int(self.staking.functions.effectiveStake(account.address, role).call())

    # -- tasks --------------------------------------------------------------------------------------

    def create_task(
        self,
        pool: int = 1_000 * COV,
        *,
        top_k: int = 3,
        min_trainer_stake: int = MIN_TRAINER_STAKE,
        min_validator_stake: int = MIN_VALIDATOR_STAKE,
        baseline: int = 1 * SCORE,
        tolerance: int = 1 * SCORE,
        creator: LocalAccount | None = None,
        phase_s: int = PHASE_S,
    ) -> Task:
        """Fund and post a task whose phases each last `phase_s` seconds from now."""
        creator = creator or self.owner
        if creator is not self.owner and pool:
            self.give_cov(creator, pool)
        self.send(self.cov.functions.approve(self.arena.address, pool), creator)
        now = self.chain.timestamp()
        deadlines = [now + phase_s * step for step in (1, 2, 3, 4)]
        spec_hash = Web3.keccak(text=f"spec:{now}")
        fn = self.arena.functions.createTask(
            spec_hash, pool, *deadlines, top_k, min_trainer_stake, min_validator_stake, baseline, tolerance
        )
        receipt = self.send(fn, creator)
        task_id = int(self.events("TaskCreated", receipt)[0]["taskId"])
        return Task(task_id, *deadlines, pool=pool)

    def advance_to(self, timestamp: int) -> None:
        """Move the chain clock to at least `timestamp` (the next transaction runs at or after it)."""
        gap = timestamp - self.chain.timestamp()
        if gap > 0:
            self.chain.increase_time(gap)

    def commit(self, task: Task, trainer: LocalAccount, weights_hash: bytes) -> TxReceipt:
        salt = os.urandom(32)
        self.salts[(task.id, trainer.address)] = salt
        commitment = submission_commitment(weights_hash, salt, trainer.address)
        return self.send(self.arena.functions.commitSubmission(task.id, commitment), trainer)

    def reveal(self, task: Task, trainer: LocalAccount, weights_hash: bytes, uri: str = "") -> TxReceipt:
        salt = self.salts[(task.id, trainer.address)]
        uri = uri or f"file://weights/{weights_hash.hex()}"
        return self.send(self.arena.functions.revealSubmission(task.id, weights_hash, salt, uri), trainer)

    def commit_scores(self, task: Task, validator: LocalAccount, scores: Sequence[int]) -> TxReceipt:
        salt = os.urandom(32)
        self.salts[(task.id, validator.address)] = salt
        commitment = scores_commitment(scores, salt, validator.address)
        return self.send(self.arena.functions.commitScores(task.id, commitment), validator)

    def reveal_scores(self, task: Task, validator: LocalAccount, scores: Sequence[int]) -> TxReceipt:
        salt = self.salts[(task.id, validator.address)]
        return self.send(self.arena.functions.revealScores(task.id, list(scores), salt), validator)

    def finalize(self, task: Task, caller: LocalAccount | None = None) -> TxReceipt:
        self.advance_to(task.score_reveal)
        return self.send(self.arena.functions.finalize(task.id), caller or self.owner)

    def play(
        self,
        task: Task,
        trainers: Sequence[LocalAccount],
        scores: dict[str, Sequence[int]],
        validators: Sequence[LocalAccount],
        *,
        silent_trainers: Sequence[LocalAccount] = (),
        silent_validators: Sequence[LocalAccount] = (),
    ) -> TxReceipt:
        """Run a whole task: `trainers` commit and reveal (the silent ones never reveal), `validators`
        commit and reveal `scores[validator.address]` (the silent ones only commit), then finalize."""
        for trainer in [*trainers, *silent_trainers]:
            self.commit(task, trainer, weights_of(f"{task.id}:{trainer.address}"))
        self.advance_to(task.submit)
        for trainer in trainers:
            self.reveal(task, trainer, weights_of(f"{task.id}:{trainer.address}"))
        self.advance_to(task.reveal)
        for validator in [*validators, *silent_validators]:
            self.commit_scores(task, validator, scores[validator.address])
        self.advance_to(task.score_commit)
        for validator in validators:
            self.reveal_scores(task, validator, scores[validator.address])
        return self.finalize(task)

    # -- views --------------------------------------------------------------------------------------

    def submissions(self, task: Task) -> list[dict[str, Any]]:
        names = self._struct_fields("submissions")
        return [dict(zip(names, row, strict=True)) for row in self.arena.functions.submissions(task.id).call()]

    def validator_records(self, task: Task) -> list[dict[str, Any]]:
        names = self._struct_fields("validatorsOf")
        return [dict(zip(names, row, strict=True)) for row in self.arena.functions.validatorsOf(task.id).call()]

    def task(self, task: Task) -> dict[str, Any]:
        names = self._struct_fields("task")
        return dict(zip(names, self.arena.functions.task(task.id).call(), strict=True))

    def _struct_fields(self, function: str) -> list[str]:
        """The field names of the struct (or struct array) that Arena view `function` returns."""
        abi = next(item for item in self.arena.abi if item.get("name") == function)
        return [component["name"] for component in abi["outputs"][0]["components"]]

    def phase(self, task: Task) -> int:
        return int(self.arena.functions.phase(task.id).call())


def build_world(chain: Chain) -> World:
    """Deploy a fresh suite (short delays) and the Arena on `chain`."""
    owner = dev_keys(1)[0]
    deployment = deploy_suite(
        chain, owner, unbonding_delay_s=100, commission_delay_s=COMMISSION_DELAY_S, genesis_cov=10_000_000
    )
    arena_address = deploy_arena(chain, deployment, owner)
    return World(
        chain=chain,
        deployment=deployment,
        owner=owner,
        cov=deployment.contract(chain, "CoveyToken"),
        staking=deployment.contract(chain, "Staking"),
        treasury=deployment.contract(chain, "Treasury"),
        arena=chain.contract("Arena", arena_address),
    )


@pytest.fixture
def world(chain: Chain) -> World:
    """A fresh suite with the Arena, on each backend: the embedded chain and the shared anvil node (hence a
    new deployment per test)."""
    return build_world(chain)
