"""Fixtures for the compute market: a fresh suite with the Market wired in, and a `Bazaar` of helpers for stories.

A story registers staked providers, lets a funded buyer post a job, moves through the bid window and the
heartbeat intervals with `chain.increase_time`, and checks balances, stakes and events.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from covey.chain import Chain
from covey.chain.deploy import Deployment, deploy_suite
from covey.chain.market_deploy import MarketParams, deploy_market
from covey.compute.client import JobTerms, MarketClient, Resources
from covey.storage import LocalStore
from tests.support import Transactor, dev_keys

COV = 10**18
USD = 10**6
PROVIDER = 3
MIN_STAKE = 100 * COV
HEARTBEAT_SLASH = 10 * COV
WRONG_RESULT_SLASH = 50 * COV
VERIFY_WINDOW_S = 600
SAMPLE_RATE_BPS = 2_500
GAS_MONEY_WEI = 10**18
REPO_ROOT = Path(__file__).resolve().parents[2]
PRE_FUNDED_ACCOUNTS = 10


def spec_hash(label: str) -> bytes:
    """A stand-in job spec hash."""
    return bytes(Web3.keccak(text=f"job spec:{label}"))


def result_of(label: str) -> bytes:
    """A stand-in result hash."""
    return bytes(Web3.keccak(text=f"result:{label}"))


@dataclass
class Bazaar(Transactor):
    """The suite, the Market, its owner and as many funded dev accounts as a story needs."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    cov: Contract
    usd: Contract
    staking: Contract
    market: Contract
    client: MarketClient
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

    def provider(
        self, price: int = 10, *, stake: int = MIN_STAKE, resources: Resources = Resources(4, 8192, 0)
    ) -> LocalAccount:
        """A new person staked as a provider with an offer at `price` USD units per unit-second."""
        (account,) = self.people(1)
        if stake:
            self.stake(account, stake)
        self.send(
            self.market.functions.registerOffer(resources.cpu_cores, resources.memory_mb, resources.gpus, price),
            account,
        )
        return account

    def buyer(self, usd: int = 1_000 * USD) -> LocalAccount:
        """A new person holding `usd` USD units."""
        (account,) = self.people(1)
        if usd:
            self.send(self.usd.functions.faucet(account.address, usd), self.owner)
        return account

    def stake(self, account: LocalAccount, amount: int) -> None:
        self.send(self.cov.functions.transfer(account.address, amount), self.owner)
        self.send(self.cov.functions.approve(self.staking.address, amount), account)
        self.send(self.staking.functions.stake(PROVIDER, amount), account)

    # -- transactions -------------------------------------------------------------------------------

    @staticmethod
    def spec_hash(label: str) -> bytes:
        return spec_hash(label)

    @staticmethod
    def result_of(label: str) -> bytes:
        return result_of(label)

    def events(self, name: str, receipt: TxReceipt, contract: Contract | None = None) -> list[dict[str, Any]]:
        source = contract if contract is not None else self.market
        return [dict(log["args"]) for log in getattr(source.events, name)().process_receipt(receipt, errors=DISCARD)]

    def post(
        self,
        buyer: LocalAccount,
        *,
        units: int = 4,
        max_price: int = 20,
        seconds_per_unit: int = 10,
        needs: Resources = Resources(2, 4096, 0),
        bid_window: int = 100,
        heartbeat: int = 60,
        extra_allowance: int = 0,
        label: str = "job",
    ) -> int:
        terms = JobTerms(spec_hash(label), units, max_price, seconds_per_unit, needs, bid_window, heartbeat)
        return self.client.post_job(buyer, terms, extra_allowance=extra_allowance)

    def advance(self, seconds: int) -> None:
        self.chain.increase_time(seconds)

    def advance_past_bidding(self, job_id: int) -> None:
        gap = self.client.job(job_id).bid_deadline - self.chain.timestamp()
        if gap > 0:
            self.chain.increase_time(gap)

    def awarded(self, buyer: LocalAccount, providers: list[tuple[LocalAccount, int]], **post: Any) -> int:
        """Post a job, let `providers` bid their prices, close the window and award it; return the job id."""
        job_id = self.post(buyer, **post)
        for provider, price in providers:
            self.client.bid(provider, job_id, price)
        self.advance_past_bidding(job_id)
        self.client.award(buyer, job_id)
        return job_id

    def commit_all(self, provider: LocalAccount, job_id: int, label: str = "honest") -> None:
        job = self.client.job(job_id)
        for unit in range(job.committed_units, job.units):
            self.client.commit_result(provider, job_id, unit, result_of(f"{label}:{job.first_unit + unit}"))

    # -- money --------------------------------------------------------------------------------------

    def usd_of(self, account: LocalAccount | str) -> int:
        address = account if isinstance(account, str) else account.address
        return int(self.usd.functions.balanceOf(address).call())

    def stake_of(self, account: LocalAccount) -> int:
        return int(self.staking.functions.stakeOf(account.address, PROVIDER).call())

    def assert_escrow_balanced(self) -> None:
        """The money invariant: the Market holds exactly the sum of its jobs' escrows."""
        held = sum(job.escrow for job in self.client.jobs())
        assert self.client.total_escrow() == held == self.usd_of(self.market.address)


def build_bazaar(chain: Chain, params: MarketParams | None = None) -> Bazaar:
    """Deploy a fresh suite (short delays) and the Market on `chain`."""
    owner = dev_keys(1)[0]
    deployment = deploy_suite(chain, owner, unbonding_delay_s=100, commission_delay_s=10, genesis_cov=10_000_000)
    params = params or MarketParams(MIN_STAKE, HEARTBEAT_SLASH, WRONG_RESULT_SLASH, SAMPLE_RATE_BPS, VERIFY_WINDOW_S)
    address = deploy_market(chain, deployment, owner, params)
    # The lead folds the Market into the suite; until then, add it to this deployment by hand.
    deployment = dataclasses.replace(deployment, contracts={**deployment.contracts, "Market": address})
    client = MarketClient.from_deployment(chain, deployment)
    return Bazaar(
        chain=chain,
        deployment=deployment,
        owner=owner,
        cov=deployment.contract(chain, "CoveyToken"),
        usd=deployment.contract(chain, "USDToken"),
        staking=deployment.contract(chain, "Staking"),
        market=client.market,
        client=client,
    )


@pytest.fixture(scope="module")
def _deployed_bazaar(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Bazaar:
    """One suite with the Market per test module, deployed under a throwaway COVEY_HOME."""
    home = tmp_path_factory.mktemp("bazaar-home")
    # Share the compiled-contract cache the per-test homes use (see tests/conftest.py).
    (home / "cache").mkdir()
    os.symlink(REPO_ROOT / ".pytest_cache" / "covey-contracts", home / "cache" / "contracts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVEY_HOME", str(home))
        return build_bazaar(Chain.from_rpc(anvil_url))


@pytest.fixture
def bazaar(_deployed_bazaar: Bazaar) -> Iterator[Bazaar]:
    """The module's suite and Market as they were after deployment: every test runs inside an anvil
    snapshot that is reverted afterwards, so tests never see each other's jobs (and skip ~3 s of deploying)."""
    chain = _deployed_bazaar.chain
    snapshot = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield dataclasses.replace(_deployed_bazaar, _handed_out=0)
    finally:
        chain.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
        # anvil's revert also winds its clock back, behind the wall clock by the test's length; tests that
        # come later on the shared node (the Arena's) read deadlines against the wall clock.
        lag_s = int(time.time()) - chain.timestamp()
        if lag_s > 0:
            chain.increase_time(lag_s)


@pytest.fixture
def fresh_bazaar(chain: Chain) -> Bazaar:
    """A suite and Market freshly deployed on each backend (the embedded chain and anvil)."""
    return build_bazaar(chain)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    """An artifact store every actor in a test shares (like one S3 bucket)."""
    return LocalStore(tmp_path / "shared-store")


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "sandboxes"
    root.mkdir()
    yield root
