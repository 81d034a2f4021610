"""Fixtures for the token-economy contracts: a freshly deployed suite with short delays, and helpers.

Test modules get everything through fixtures (`suite`, `new_suite`); the `Suite` object carries the
deployment's settings, so no test imports from this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxReceipt

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import CORE_STEPS, Deployment, deploy_suite
from tests.support import Transactor

COV = 10**18
USD = 10**6
UNBONDING_DELAY_S = 100
COMMISSION_DELAY_S = 50
GENESIS_COV = 10_000_000
EMISSION_PER_EPOCH_COV = 1_000
EPOCH_LENGTH_S = 3_600

# Roles as the contract numbers them (covey.chain.roles.Role mirrors these).
TRAINER, VALIDATOR, HOST, PROVIDER, PARTICIPANT = range(5)


@dataclass
class Suite(Transactor):
    """A deployed suite plus the people in the stories: the owner (deployer) and nine other dev accounts."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    people: list[LocalAccount]
    cov: Contract
    usd: Contract
    staking: Contract
    treasury: Contract
    registry: Contract
    unbonding_delay_s: int = UNBONDING_DELAY_S
    commission_delay_s: int = COMMISSION_DELAY_S
    genesis_cov: int = GENESIS_COV
    emission_per_epoch: int = EMISSION_PER_EPOCH_COV * COV
    epoch_length_s: int = EPOCH_LENGTH_S

    def give_cov(self, account: LocalAccount, amount: int) -> None:
        """Hand `amount` wei of COV from the genesis holder to `account`."""
        self.send(self.cov.functions.transfer(account.address, amount), self.owner)

    def stake(self, account: LocalAccount, role: int, amount: int) -> TxReceipt:
        """Fund, approve and stake `amount` wei of COV as `account`'s self-stake."""
        self.give_cov(account, amount)
        self.send(self.cov.functions.approve(self.staking.address, amount), account)
        return self.send(self.staking.functions.stake(role, amount), account)

    def delegate(self, delegator: LocalAccount, operator: LocalAccount, role: int, amount: int) -> TxReceipt:
        """Fund, approve and delegate `amount` wei of COV from `delegator` to `operator`."""
        self.give_cov(delegator, amount)
        self.send(self.cov.functions.approve(self.staking.address, amount), delegator)
        return self.send(self.staking.functions.delegate(operator.address, role, amount), delegator)

    def make_module(self, account: LocalAccount) -> LocalAccount:
        """Register `account` as a Staking module (a plain key stands in for Arena/Alliance/Market)."""
        self.send(self.staking.functions.setModule(account.address, True), self.owner)
        return account

    def balance(self, address: str) -> int:
        return int(self.cov.functions.balanceOf(address).call())

    def events(self, contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The decoded `name` events `contract` emitted in `receipt`, as plain dicts of their arguments."""
        # DISCARD: the receipt also holds other contracts' logs (e.g. COV transfers), which are not errors.
        event = getattr(contract.events, name)()
        return [dict(log["args"]) for log in event.process_receipt(receipt, errors=DISCARD)]


def deploy_test_suite(chain: Chain) -> Suite:
    """Deploy the suite with short delays (seconds) so stories can travel through time cheaply."""
    # web3 asks the node for the chain id before every call and transaction; it never changes, and
    # caching that one answer halves the round trips (property tests make thousands of calls).
    chain.w3.provider.cacheable_requests = {RPCEndpoint("eth_chainId")}
    chain.w3.provider.cache_allowed_requests = True
    owner, *people = dev_accounts(10)
    deployment = deploy_suite(
        chain,
        owner,
        unbonding_delay_s=UNBONDING_DELAY_S,
        commission_delay_s=COMMISSION_DELAY_S,
        genesis_cov=GENESIS_COV,
        emission_per_epoch_cov=EMISSION_PER_EPOCH_COV,
        epoch_length_s=EPOCH_LENGTH_S,
        # Only the token economy: capability contracts appended to SUITE_STEPS have their own tests.
        steps=CORE_STEPS,
    )
    return Suite(
        chain=chain,
        deployment=deployment,
        owner=owner,
        people=people,
        cov=deployment.contract(chain, "CoveyToken"),
        usd=deployment.contract(chain, "USDToken"),
        staking=deployment.contract(chain, "Staking"),
        treasury=deployment.contract(chain, "Treasury"),
        registry=deployment.contract(chain, "Registry"),
    )


@pytest.fixture
def new_suite(chain: Chain) -> Callable[[], Suite]:
    """Deploy another fresh suite on demand (property tests need one per example)."""
    return lambda: deploy_test_suite(chain)


@pytest.fixture
def suite(chain: Chain) -> Suite:
    """A fresh suite on the test's chain (the shared anvil node accumulates state, so never reuse one)."""
    return deploy_test_suite(chain)
