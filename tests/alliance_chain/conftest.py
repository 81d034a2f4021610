"""Fixtures for the Alliance contract: one suite with the Alliance per module, fresh people and alliances per test.

Alliances are independent of each other, so a module shares one deployment and each test creates its own
alliance with its own newly made, staked accounts: stories never see each other's stake or slashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from covey.alliance.client import AllianceClient, AllianceParams, Phase
from covey.chain import Chain, dev_accounts
from covey.chain.alliance_deploy import deploy_alliance
from covey.chain.deploy import Deployment, deploy_suite
from tests.support import Transactor

COV = 10**18
PARTICIPANT = 4
MIN_STAKE = 100 * COV
PHASE_S = 100
GAS_MONEY_WEI = 10**18
REPO_ROOT = Path(__file__).resolve().parents[2]


def model_hash(label: str) -> bytes:
    """A stand-in sha256-sized hash for a model or update called `label`."""
    return bytes(Web3.keccak(text=f"model:{label}"))


@dataclass
class World(Transactor):
    """The suite, the Alliance, its owner, and helpers that play the parts of a round."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    cov: Contract
    staking: Contract
    treasury: Contract
    client: AllianceClient
    salts: dict[tuple[int, int, str], bytes] = field(default_factory=dict)

    @property
    def alliance(self) -> Contract:
        return self.client.contract

    @property
    def initial(self) -> bytes:
        """The initial model hash every test alliance starts from."""
        return model_hash("initial")

    @staticmethod
    def hash_of(label: str) -> bytes:
        return model_hash(label)

    # -- people and money ---------------------------------------------------------------------------

    def people(self, count: int) -> list[LocalAccount]:
        """`count` brand-new accounts with gas money and no COV."""
        accounts = [Account.create() for _ in range(count)]
        for account in accounts:
            self.chain.send_eth(self.owner, account.address, GAS_MONEY_WEI)
        return accounts

    def participants(self, count: int, stake: int = MIN_STAKE) -> list[LocalAccount]:
        """`count` new accounts, each with `stake` COV self-staked as a participant."""
        accounts = self.people(count)
        for account in accounts:
            self.stake(account, stake)
        return accounts

    def stake(self, account: LocalAccount, amount: int) -> None:
        self.give_cov(account.address, amount)
        self.send(self.cov.functions.approve(self.staking.address, amount), account)
        self.send(self.staking.functions.stake(PARTICIPANT, amount), account)

    def give_cov(self, address: str, amount: int) -> None:
        self.send(self.cov.functions.transfer(address, amount), self.owner)

    def balance(self, address: str) -> int:
        return int(self.cov.functions.balanceOf(address).call())

    def stake_of(self, account: LocalAccount) -> int:
        return int(self.staking.functions.effectiveStake(account.address, PARTICIPANT).call())

    # -- transactions -------------------------------------------------------------------------------

    def advance_to(self, timestamp: int) -> None:
        gap = timestamp - self.chain.timestamp()
        if gap > 0:
            self.chain.increase_time(gap)

    def mine(self, blocks: int) -> None:
        """Mine `blocks` empty blocks."""
        try:
            self.chain.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]
        except Exception:  # not anvil: one block at a time
            for _ in range(blocks):
                self.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    # -- alliances ----------------------------------------------------------------------------------

    def params(self, **overrides: Any) -> AllianceParams:
        base = AllianceParams(
            spec_hash=model_hash("spec"),
            initial_model_hash=model_hash("initial"),
            reward_pool=1_000 * COV,
            rounds=2,
            proposers_per_round=2,
            voters_per_round=3,
            min_stake=MIN_STAKE,
            slash_bps=5_000,
            propose_duration_s=PHASE_S,
            commit_duration_s=PHASE_S,
            reveal_duration_s=PHASE_S,
            rule_id=0,
        )
        return replace(base, **overrides)

    def create(self, creator: LocalAccount | None = None, **overrides: Any) -> int:
        """Create an alliance (funded by `creator`, default the owner) and return its id."""
        params = self.params(**overrides)
        creator = creator or self.owner
        if creator is not self.owner and params.reward_pool:
            self.give_cov(creator.address, params.reward_pool)
        return self.client.create(params, creator)

    def alliance_with(self, members: int, stake: int = MIN_STAKE, **overrides: Any) -> tuple[int, list[LocalAccount]]:
        """A new alliance joined by `members` new participants."""
        alliance_id = self.create(**overrides)
        accounts = self.participants(members, stake)
        for account in accounts:
            self.client.join(alliance_id, account)
        return alliance_id, accounts

    def start(self, alliance_id: int, members: Sequence[LocalAccount]) -> tuple[list[LocalAccount], list[LocalAccount]]:
        """Open and start the next round; return the drawn proposers and voters as accounts."""
        self.client.open_round(alliance_id, self.owner)
        assert self.client.start_round(alliance_id, self.owner)
        by_address = {account.address: account for account in members}
        round_number = self.client.alliance(alliance_id).current_round
        proposers, voters = self.client.committee(alliance_id, round_number)
        return [by_address[a] for a in proposers], [by_address[a] for a in voters]

    def commit_vote(self, alliance_id: int, voter: LocalAccount, mask: int, model: bytes) -> TxReceipt:
        round_number = self.client.alliance(alliance_id).current_round
        salt = os.urandom(32)
        self.salts[(alliance_id, round_number, voter.address)] = salt
        return self.client.commit_vote(alliance_id, mask, model, salt, voter)

    def reveal_vote(self, alliance_id: int, voter: LocalAccount, mask: int, model: bytes) -> TxReceipt:
        round_number = self.client.alliance(alliance_id).current_round
        salt = self.salts[(alliance_id, round_number, voter.address)]
        return self.client.reveal_vote(alliance_id, mask, model, salt, voter)

    def play(
        self,
        alliance_id: int,
        proposers: Sequence[LocalAccount],
        voters: Sequence[LocalAccount],
        masks: dict[str, int],
        model: bytes | dict[str, bytes],
        *,
        silent_proposers: Sequence[LocalAccount] = (),
        silent_voters: Sequence[LocalAccount] = (),
        unrevealed_voters: Sequence[LocalAccount] = (),
    ) -> TxReceipt:
        """Play the started round to the end and finalize it: every proposer not silent commits an update,
        every voter not silent commits `masks[voter]` and the model hash, all but the unrevealed reveal."""
        round_number = self.client.alliance(alliance_id).current_round
        info = self.client.round(alliance_id, round_number)
        for proposer in proposers:
            if proposer not in silent_proposers:
                self.client.commit_update(
                    alliance_id, model_hash(f"{alliance_id}:{round_number}:{proposer.address}"), proposer
                )
        self.advance_to(self.client.round(alliance_id, round_number).propose_end)
        voting = [v for v in voters if v not in silent_voters]
        for voter in voting:
            self.commit_vote(alliance_id, voter, masks[voter.address], _model_for(model, voter))
        self.advance_to(self.client.round(alliance_id, round_number).commit_end)
        for voter in voting:
            if voter not in unrevealed_voters:
                self.reveal_vote(alliance_id, voter, masks[voter.address], _model_for(model, voter))
        self.advance_to(self.client.round(alliance_id, round_number).reveal_end)
        assert info.voter_count == len(voters)
        assert self.client.phase(alliance_id) == Phase.FINALISABLE
        return self.client.finalize_round(alliance_id, self.owner)


def _model_for(model: bytes | dict[str, bytes], voter: LocalAccount) -> bytes:
    return model[voter.address] if isinstance(model, dict) else model


def build_world(chain: Chain) -> World:
    """Deploy a suite (short delays) and the Alliance on `chain`."""
    owner = dev_accounts(1)[0]
    deployment = deploy_suite(chain, owner, unbonding_delay_s=100, commission_delay_s=10, genesis_cov=10_000_000)
    address = deploy_alliance(chain, deployment, owner)
    return World(
        chain=chain,
        deployment=deployment,
        owner=owner,
        cov=deployment.contract(chain, "CoveyToken"),
        staking=deployment.contract(chain, "Staking"),
        treasury=deployment.contract(chain, "Treasury"),
        client=AllianceClient(chain, address),
    )


@pytest.fixture(scope="module")
def module_world(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One suite with the Alliance for a whole test module, deployed from a home of its own.

    Module fixtures run before the per-test `covey_home`, so this one isolates COVEY_HOME itself.
    """
    home = tmp_path_factory.mktemp("alliance-suite-home")
    shared_cache = REPO_ROOT / ".pytest_cache" / "covey-contracts"
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir(parents=True, exist_ok=True)
    os.symlink(shared_cache, home / "cache" / "contracts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        patch.delenv("COVEY_RPC_URL", raising=False)
        yield build_world(Chain.from_rpc(anvil_url))


@pytest.fixture
def world(module_world: World) -> World:
    """The module's suite, with no salts left over from other tests."""
    module_world.salts.clear()
    return module_world
