"""`AllianceClient`: the Alliance contract as typed Python: transactions, views as dataclasses, phases as enums.

Every write signs with the given account through `Chain.transact` (a revert raises `ChainError` whose
`.reason` is the contract's `alliance: ...` message); every view decodes the contract's structs (web3's named
tuples) into frozen dataclasses with the same fields in snake_case (`covey.chain.structs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD
from web3.types import BlockIdentifier, TxReceipt

from covey.chain.alliance_deploy import ALLIANCE, vote_commitment
from covey.chain.chain import Chain, revert_reason
from covey.chain.deploy import Deployment
from covey.chain.structs import struct_as, with_named_structs
from covey.errors import ChainError

RANDOMNESS_POLL_S = 0.5
# Init code that returns the block's timestamp (TIMESTAMP PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN): run as an
# `eth_call` without a `to` in the pending block, it reads the time the next transaction will see, on any node.
_TIMESTAMP_INIT_CODE = HexStr("0x4260005260206000f3")


class Phase(IntEnum):
    """Where an alliance stands (`Alliance.phase`)."""

    IDLE = 0  # waiting for `openRound`
    ARMED = 1  # waiting for the randomness block, then `startRound`
    PROPOSING = 2
    COMMITTING = 3
    REVEALING = 4
    FINALISABLE = 5
    COMPLETE = 6


class UpdateStatus(IntEnum):
    """The tally's verdict on one update."""

    PENDING = 0
    ACCEPTED = 1
    REJECTED = 2
    UNDECIDED = 3
    MISSING = 4


class VoterOutcome(IntEnum):
    """The tally's verdict on one voter."""

    PENDING = 0
    WINNING = 1
    LOSING = 2
    SILENT = 3


class RoundRole(IntEnum):
    """An account's part in a round (`Alliance.roleIn`)."""

    NONE = 0
    PROPOSER = 1
    VOTER = 2


@dataclass(frozen=True)
class AllianceParams:
    """What a creator chooses (amounts in COV wei, durations in seconds, `rule_id` from `covey.alliance.rules`)."""

    spec_hash: bytes
    initial_model_hash: bytes
    reward_pool: int
    rounds: int
    proposers_per_round: int
    voters_per_round: int
    min_stake: int
    slash_bps: int = 5_000
    propose_duration_s: int = 60
    commit_duration_s: int = 60
    reveal_duration_s: int = 60
    rule_id: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        """The `AllianceParams` struct in ABI order."""
        return (
            self.spec_hash,
            self.initial_model_hash,
            self.reward_pool,
            self.rounds,
            self.proposers_per_round,
            self.voters_per_round,
            self.min_stake,
            self.slash_bps,
            self.propose_duration_s,
            self.commit_duration_s,
            self.reveal_duration_s,
            self.rule_id,
        )


@dataclass(frozen=True)
class AllianceInfo:
    creator: str
    spec_hash: bytes
    initial_model_hash: bytes
    rounds: int
    proposers_per_round: int
    voters_per_round: int
    min_stake: int
    penalty: int
    propose_duration: int
    commit_duration: int
    reveal_duration: int
    aggregation_rule: int
    reward_pool: int
    member_count: int
    current_round: int
    state: int
    randomness_block: int
    snapshot_stake: int
    eligible_count: int
    model_hash: bytes
    model_round: int
    total_paid: int
    total_slashed: int
    total_recovered: int
    refunded: int

    @property
    def closing_round(self) -> int:
        """The voters-only round after the training rounds that confirms the final model."""
        return self.rounds + 1


@dataclass(frozen=True)
class RoundInfo:
    seed: bytes
    randomness_block: int
    started_at: int
    propose_end: int
    commit_end: int
    reveal_end: int
    proposer_count: int
    voter_count: int
    committed_count: int
    committed_mask: int
    votes_committed: int
    votes_revealed: int
    committee_stake: int
    revealed_stake: int
    accepted_mask: int
    rejected_mask: int
    model_hash: bytes
    model_stake: int
    model_confirmed: bool
    reward: int
    proposer_paid: int
    voter_paid: int
    slashed: int
    recovered: int
    finalized: bool


@dataclass(frozen=True)
class Proposal:
    proposer: str
    weight: int
    update_hash: bytes
    committed: bool
    status: UpdateStatus
    accept_stake: int
    reject_stake: int
    payout: int
    slashed: int


@dataclass(frozen=True)
class Vote:
    voter: str
    weight: int
    commitment: bytes
    committed: bool
    revealed: bool
    accept_mask: int
    model_hash: bytes
    agreed: int
    outcome: VoterOutcome
    payout: int
    slashed: int


class AllianceClient:
    """Typed access to one deployed Alliance contract."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract: Contract = chain.contract(ALLIANCE, address)
        self.address = str(self.contract.address)
        self._structs = with_named_structs(self.contract)  # for the views that return structs
        self._token: Contract | None = None

    @classmethod
    def from_deployment(cls, chain: Chain, deployment: Deployment) -> AllianceClient:
        """The Alliance of a suite deployment (raises `ChainError` when the suite has none)."""
        return cls(chain, deployment.address(ALLIANCE))

    @property
    def token(self) -> Contract:
        """The COV token the alliance pays in."""
        if self._token is None:
            self._token = self.chain.contract("CoveyToken", self.contract.functions.token().call())
        return self._token

    # -- writes ---------------------------------------------------------------------------------------

    def create(self, params: AllianceParams, sender: LocalAccount) -> int:
        """Approve the pool, create the alliance, return its id."""
        if params.reward_pool > 0:
            self.chain.transact(self.token.functions.approve(self.address, params.reward_pool), sender)
        receipt = self.chain.transact(self.contract.functions.createAlliance(params.as_tuple()), sender)
        return int(self.events("AllianceCreated", receipt)[0]["allianceId"])

    def add_to_pool(self, alliance_id: int, amount: int, sender: LocalAccount) -> TxReceipt:
        self.chain.transact(self.token.functions.approve(self.address, amount), sender)
        return self.chain.transact(self.contract.functions.addToPool(alliance_id, amount), sender)

    def join(self, alliance_id: int, sender: LocalAccount) -> TxReceipt:
        return self.chain.transact(self.contract.functions.join(alliance_id), sender)

    def open_round(self, alliance_id: int, sender: LocalAccount) -> int:
        """Open the next round; returns its number."""
        receipt = self.chain.transact(self.contract.functions.openRound(alliance_id), sender)
        return int(self.events("RoundOpened", receipt)[0]["round"])

    def wait_for_randomness(self, alliance_id: int, timeout_s: float = 120.0) -> None:
        """Block until the randomness block is mined (mining empty blocks on a dev chain instead of waiting)."""
        target = self.alliance(alliance_id).randomness_block
        deadline = time.monotonic() + timeout_s
        while self.chain.block_number() <= target:
            if self.chain.is_local:
                self.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
                continue
            if time.monotonic() > deadline:
                raise ChainError(f"block {target} was not mined within {timeout_s:.0f}s")
            time.sleep(RANDOMNESS_POLL_S)

    def start_round(self, alliance_id: int, sender: LocalAccount) -> bool:
        """Start the armed round once its randomness block exists; False if it had to re-arm instead."""
        self.wait_for_randomness(alliance_id)
        receipt = self.chain.transact(self.contract.functions.startRound(alliance_id), sender)
        return bool(self.events("RoundStarted", receipt))

    def commit_update(self, alliance_id: int, update_hash: bytes, sender: LocalAccount) -> TxReceipt:
        self.catch_up_clock(alliance_id)
        return self.chain.transact(self.contract.functions.commitUpdate(alliance_id, update_hash), sender)

    def commit_vote(
        self, alliance_id: int, accept_mask: int, model_hash: bytes, salt: bytes, sender: LocalAccount
    ) -> TxReceipt:
        commitment = vote_commitment(accept_mask, model_hash, salt, sender.address)
        self.catch_up_clock(alliance_id)
        return self.chain.transact(self.contract.functions.commitVote(alliance_id, commitment), sender)

    def reveal_vote(
        self, alliance_id: int, accept_mask: int, model_hash: bytes, salt: bytes, sender: LocalAccount
    ) -> TxReceipt:
        fn = self.contract.functions.revealVote(alliance_id, accept_mask, model_hash, salt)
        self.catch_up_clock(alliance_id)
        return self.chain.transact(fn, sender)

    def finalize_round(self, alliance_id: int, sender: LocalAccount) -> TxReceipt:
        self.catch_up_clock(alliance_id)
        return self.chain.transact(self.contract.functions.finalizeRound(alliance_id), sender)

    # -- views ----------------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.contract.functions.allianceCount().call())

    def alliance(self, alliance_id: int) -> AllianceInfo:
        return struct_as(AllianceInfo, self._call_structs("alliance", alliance_id))

    def round(self, alliance_id: int, round_number: int) -> RoundInfo:
        return struct_as(RoundInfo, self._call_structs("round", alliance_id, round_number))

    def proposals(self, alliance_id: int, round_number: int) -> list[Proposal]:
        rows = self._call_structs("proposals", alliance_id, round_number)
        return [struct_as(Proposal, row) for row in rows]

    def votes(self, alliance_id: int, round_number: int) -> list[Vote]:
        rows = self._call_structs("votes", alliance_id, round_number)
        return [struct_as(Vote, row) for row in rows]

    def committee(self, alliance_id: int, round_number: int) -> tuple[list[str], list[str]]:
        proposers, voters = self._call("committee", alliance_id, round_number)
        return [str(a) for a in proposers], [str(a) for a in voters]

    def members(self, alliance_id: int) -> list[str]:
        return [str(a) for a in self._call("members", alliance_id)]

    def snapshot_weights(self, alliance_id: int) -> list[int]:
        return [int(w) for w in self._call("snapshotWeights", alliance_id)]

    def phase(self, alliance_id: int, *, block: BlockIdentifier = "pending") -> Phase:
        """Where the alliance stands for the next transaction (the pending block), or at `block`.

        Phases end at deadlines compared with `block.timestamp`. On a chain that mines only on demand (the
        embedded chain, anvil) the latest block keeps its old time while nobody transacts, so read there a
        phase whose deadline has passed would seem to run on forever; the pending block carries the time a
        transaction sent now would see.
        """
        fn = self.contract.functions.phase(alliance_id)
        try:
            return Phase(int(fn.call(block_identifier=block)))
        except (ContractLogicError, Web3RPCError) as exc:  # as `Chain.call`, which reads only the latest block
            reason = revert_reason(exc)
            raise ChainError(reason, reason=reason) from exc

    def now(self) -> int:
        """The chain's time as the next transaction will see it (the pending block's timestamp)."""
        reply = self.chain.w3.eth.call({"data": _TIMESTAMP_INIT_CODE}, block_identifier="pending")
        return int.from_bytes(bytes(reply), "big")

    def catch_up_clock(self, alliance_id: int) -> bool:
        """On a chain that mines only on demand, mine an empty block if a deadline passed since the latest one.

        Gas estimates (anvil's), revert replays and anyone reading the latest block (the explorer, other
        tools) judge the phase by the latest block's time: after a quiet spell they would still see a phase
        that is over. Returns whether a block was mined.
        """
        if not self.chain.is_local or self.phase(alliance_id) == self.phase(alliance_id, block="latest"):
            return False
        self.chain.mine()
        return True

    def role_in(self, alliance_id: int, round_number: int, account: str) -> tuple[RoundRole, int]:
        role, index = self._call("roleIn", alliance_id, round_number, Web3.to_checksum_address(account))
        return RoundRole(int(role)), int(index)

    def accepted_updates(self, alliance_id: int, round_number: int) -> list[bytes]:
        return [bytes(h) for h in self._call("acceptedUpdates", alliance_id, round_number)]

    def rejected_updates(self, alliance_id: int, round_number: int) -> list[bytes]:
        return [bytes(h) for h in self._call("rejectedUpdates", alliance_id, round_number)]

    def global_model(self, alliance_id: int) -> tuple[bytes, int]:
        """The latest confirmed global model hash and the round that produced it (0 = initial)."""
        model_hash, produced_by = self._call("globalModel", alliance_id)
        return bytes(model_hash), int(produced_by)

    def model_after_round(self, alliance_id: int, round_number: int) -> bytes:
        return bytes(self._call("modelAfterRound", alliance_id, round_number))

    def events(self, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The decoded `name` events the Alliance emitted in `receipt`, as dicts."""
        logs = getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]

    def _call(self, function: str, *args: Any) -> Any:
        return self.chain.call(getattr(self.contract.functions, function)(*args))

    def _call_structs(self, function: str, *args: Any) -> Any:
        return self.chain.call(getattr(self._structs.functions, function)(*args))
