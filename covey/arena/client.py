"""`ArenaClient`: a typed wrapper over the Arena contract (transactions, views, commitment hashing).

Commitments are hashed here exactly as the contract hashes them (`keccak256(abi_encode(...))`), so a
node can check its own commitment before it pays gas to reveal it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from covey.chain import Chain, reverts
from covey.chain.arena_deploy import scores_commitment as scores_commitment
from covey.chain.arena_deploy import submission_commitment as submission_commitment
from covey.chain.deploy import Deployment
from covey.chain.structs import struct_as, with_named_structs
from covey.errors import ChainError, ValidationError

MAX_FINALIZE_GAS = 29_000_000  # under a 30M block


def finalize_gas(submissions: int, validators: int) -> int:
    """A safe gas limit for `finalize`: twice bench/arena_gas.py's measured cost (about 410k + 62k per
    submission + 108k per validator + 5k per submission x validator), capped under a block."""
    measured = 410_000 + 62_000 * submissions + 108_000 * validators + 5_000 * submissions * validators
    return min(2 * measured + 500_000, MAX_FINALIZE_GAS)


class Phase(IntEnum):
    """A task's phase as the contract's `phase` view reports it."""

    COMMITTING = 0
    REVEALING = 1
    SCORING = 2
    REVEALING_SCORES = 3
    FINALISABLE = 4
    FINALISED = 5

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class TaskInfo:
    """A task's parameters, counters and settlement totals (token amounts in COV units)."""

    task_id: int
    creator: str
    spec_hash: bytes
    reward_pool: int
    submit_deadline: int
    reveal_deadline: int
    score_commit_deadline: int
    score_reveal_deadline: int
    top_k: int
    min_trainer_stake: int
    min_validator_stake: int
    baseline_score: int
    tolerance: int
    trainer_penalty: int
    validator_penalty: int
    submission_count: int
    revealed_count: int
    validator_count: int
    revealed_validator_count: int
    finalized: bool
    has_winner: bool
    winner_index: int
    trainer_paid: int
    validator_paid: int
    refunded: int

    @property
    def deadlines(self) -> tuple[int, int, int, int]:
        """The four deadlines in order (the contract makes them strictly increasing)."""
        return (self.submit_deadline, self.reveal_deadline, self.score_commit_deadline, self.score_reveal_deadline)

    def phase_at(self, now: int) -> Phase:
        """The phase at chain time `now`, by the same comparisons as the contract's `phase` view."""
        if self.finalized:
            return Phase.FINALISED
        # Phases 0..4 are numbered by how many deadlines lie behind them.
        return Phase(sum(1 for deadline in self.deadlines if now >= deadline))

    def phase_deadline(self, phase: Phase) -> int:
        """The chain time at which `phase` begins (0 for committing, which begins at creation)."""
        if phase == Phase.FINALISED:
            raise ValidationError("finalisation happens when someone calls finalize, not at a set time")
        return 0 if phase == Phase.COMMITTING else self.deadlines[phase - 1]

    def next_deadline(self, now: int) -> int | None:
        """The next deadline after `now`, or None once every deadline has passed."""
        return next((deadline for deadline in self.deadlines if now < deadline), None)


@dataclass(frozen=True)
class Submission:
    """One trainer's submission, in commit order (`index`)."""

    index: int
    trainer: str
    commitment: bytes
    weights_hash: bytes
    uri: str
    revealed: bool
    consensus_score: int
    rank: int
    payout: int
    slashed: int


@dataclass(frozen=True)
class ValidatorRecord:
    """One validator's standing in a task, in commit order (`index`)."""

    index: int
    validator: str
    commitment: bytes
    weight: int
    revealed: bool
    mean_deviation: int
    payout: int
    slashed: int


@dataclass(frozen=True)
class ConsensusModel:
    """A finalised task's winning model."""

    trainer: str
    weights_hash: bytes
    uri: str
    consensus_score: int


@dataclass(frozen=True)
class Deadlines:
    """Absolute chain timestamps of a task's four deadlines."""

    submit: int
    reveal: int
    score_commit: int
    score_reveal: int

    @classmethod
    def after(cls, start: int, submit_s: int, reveal_s: int, score_commit_s: int, score_reveal_s: int) -> Deadlines:
        """Deadlines from phase lengths in seconds, starting at chain time `start`."""
        if min(submit_s, reveal_s, score_commit_s, score_reveal_s) <= 0:
            raise ValidationError("every phase must last at least one second")
        submit = start + submit_s
        reveal = submit + reveal_s
        score_commit = reveal + score_commit_s
        return cls(submit, reveal, score_commit, score_commit + score_reveal_s)


def new_salt() -> bytes:
    """32 random bytes: a commitment's secret salt."""
    return secrets.token_bytes(32)


def _check_bytes32(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValidationError(f"{what} must be 32 bytes")


class ArenaClient:
    """The Arena contract at one address, seen through one `Chain` connection."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract: Contract = chain.contract("Arena", address)
        self.address = self.contract.address
        self._structs = with_named_structs(self.contract)  # for the views that return structs

    @classmethod
    def from_deployment(cls, chain: Chain, deployment: Deployment) -> ArenaClient:
        """The Arena of a deployed suite; `ChainError` when the suite has none."""
        return cls(chain, deployment.address("Arena"))

    # -- the suite around it ---------------------------------------------------------------------------

    @cached_property
    def token(self) -> Contract:
        """The COV token pools are paid in."""
        return self.chain.contract("CoveyToken", self.contract.functions.token().call())

    @cached_property
    def staking(self) -> Contract:
        """The Staking contract the Arena checks stakes against, pays through and slashes through."""
        return self.chain.contract("Staking", self.contract.functions.staking().call())

    def effective_stake(self, account: str, role: int) -> int:
        """Self-stake plus delegations behind `account` for `role` (what the Arena compares with its minimums)."""
        return int(self.chain.call(self.staking.functions.effectiveStake(account, role)))

    # -- clock ----------------------------------------------------------------------------------------

    def now(self) -> int:
        """Our best estimate of the chain's clock: the newer of the latest block and the wall clock.

        The latest block can be old when nobody transacts; transactions are mined at wall-clock time
        (plus any dev-chain offset), so the wall clock is a safe lower bound there.
        """
        return max(self.chain.timestamp(), int(time.time()))

    # -- creator --------------------------------------------------------------------------------------

    def create_task(
        self,
        creator: LocalAccount,
        *,
        spec_hash: bytes,
        reward_pool: int,
        deadlines: Deadlines,
        top_k: int,
        min_trainer_stake: int,
        min_validator_stake: int,
        baseline_score: int,
        tolerance: int,
    ) -> int:
        """Approve the pool and post a task; returns the new task id."""
        _check_bytes32(spec_hash, "spec hash")
        if reward_pool > 0:
            self.chain.transact(self.token.functions.approve(self.address, reward_pool), creator)
        receipt = self.chain.transact(
            self.contract.functions.createTask(
                spec_hash,
                reward_pool,
                deadlines.submit,
                deadlines.reveal,
                deadlines.score_commit,
                deadlines.score_reveal,
                top_k,
                min_trainer_stake,
                min_validator_stake,
                baseline_score,
                tolerance,
            ),
            creator,
        )
        events = self.contract.events.TaskCreated().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise ChainError("createTask succeeded but logged no TaskCreated event")
        return int(events[0]["args"]["taskId"])

    # -- trainers -------------------------------------------------------------------------------------

    def commit_submission(self, trainer: LocalAccount, task_id: int, commitment: bytes) -> TxReceipt:
        return self.chain.transact(self.contract.functions.commitSubmission(task_id, commitment), trainer)

    def reveal_submission(
        self, trainer: LocalAccount, task_id: int, weights_hash: bytes, salt: bytes, uri: str
    ) -> TxReceipt:
        fn = self.contract.functions.revealSubmission(task_id, weights_hash, salt, uri)
        return self.chain.transact(fn, trainer)

    # -- validators -----------------------------------------------------------------------------------

    def commit_scores(self, validator: LocalAccount, task_id: int, commitment: bytes) -> TxReceipt:
        return self.chain.transact(self.contract.functions.commitScores(task_id, commitment), validator)

    def reveal_scores(self, validator: LocalAccount, task_id: int, scores: list[int], salt: bytes) -> TxReceipt:
        return self.chain.transact(self.contract.functions.revealScores(task_id, list(scores), salt), validator)

    # -- anyone ---------------------------------------------------------------------------------------

    def finalize(self, caller: LocalAccount, task_id: int) -> TxReceipt:
        """Settle a task, with a computed gas limit: estimating `finalize` costs py-evm about ten runs of it.

        The contract's two rules are checked here first, with its own reasons, because a transaction sent
        with a set gas limit reverts on chain, where an embedded chain cannot replay it for the reason.
        """
        task = self.task(task_id)
        for broken, reason in (
            (task.finalized, reverts.ARENA_ALREADY_FINALISED),
            (self.now() < task.score_reveal_deadline, reverts.ARENA_NOT_FINALISABLE_YET),
        ):
            if broken:
                raise ChainError(f"finalize reverted: {reason}", reason=reason)
        gas = finalize_gas(task.submission_count, task.validator_count)
        return self.chain.transact(self.contract.functions.finalize(task_id), caller, gas=gas)

    # -- views ----------------------------------------------------------------------------------------

    def task_count(self) -> int:
        return int(self.chain.call(self.contract.functions.taskCount()))

    def task(self, task_id: int) -> TaskInfo:
        return struct_as(TaskInfo, self.chain.call(self._structs.functions.task(task_id)), task_id=task_id)

    def phase(self, task_id: int) -> Phase:
        """The phase by the latest block's clock (see `TaskInfo.phase_at` for a fresher estimate)."""
        return Phase(int(self.chain.call(self.contract.functions.phase(task_id))))

    def submissions(self, task_id: int) -> list[Submission]:
        """Every submission in commit order (the order validators' scores follow, skipping unrevealed ones)."""
        rows = self.chain.call(self._structs.functions.submissions(task_id))
        return [struct_as(Submission, row, index=index) for index, row in enumerate(rows)]

    def submission(self, task_id: int, index: int) -> Submission:
        return struct_as(Submission, self.chain.call(self._structs.functions.submission(task_id, index)), index=index)

    def submission_of(self, task_id: int, trainer: str) -> Submission | None:
        """A trainer's submission, or None when it has not committed to this task."""
        try:
            index = int(self.chain.call(self.contract.functions.submissionIndexOf(task_id, trainer)))
        except ChainError as exc:
            if exc.reason == reverts.ARENA_NO_SUBMISSION:
                return None
            raise
        return self.submission(task_id, index)

    def validators(self, task_id: int) -> list[ValidatorRecord]:
        """Every validator that committed scores, in commit order."""
        rows = self.chain.call(self._structs.functions.validatorsOf(task_id))
        return [struct_as(ValidatorRecord, row, index=index) for index, row in enumerate(rows)]

    def validator_of(self, task_id: int, validator: str) -> ValidatorRecord | None:
        """A validator's record in a task, or None when it has not committed scores."""
        wanted = validator.lower()
        return next((record for record in self.validators(task_id) if record.validator.lower() == wanted), None)

    def revealed_scores(self, task_id: int, validator: str) -> list[int]:
        return [int(score) for score in self.chain.call(self.contract.functions.revealedScores(task_id, validator))]

    def consensus_model(self, task_id: int) -> ConsensusModel | None:
        """The winning model of a finalised task, or None when there is none (yet)."""
        try:
            trainer, weights_hash, uri, score = self.chain.call(self.contract.functions.consensusModel(task_id))
        except ChainError as exc:
            if exc.reason in (reverts.ARENA_NOT_FINALISED, reverts.ARENA_NO_CONSENSUS_MODEL):
                return None
            raise
        return ConsensusModel(trainer, bytes(weights_hash), uri, int(score))

    def on_chain_submission_commitment(self, weights_hash: bytes, salt: bytes, trainer: str) -> bytes:
        """The contract's own hash of a submission commitment (to cross-check `submission_commitment`)."""
        return bytes(self.chain.call(self.contract.functions.submissionCommitment(weights_hash, salt, trainer)))

    def on_chain_scores_commitment(self, scores: list[int], salt: bytes, validator: str) -> bytes:
        """The contract's own hash of a scores commitment (to cross-check `scores_commitment`)."""
        return bytes(self.chain.call(self.contract.functions.scoresCommitment(list(scores), salt, validator)))
