"""Money invariants under random sequences of stake/delegate/undelegate/unbond/withdraw/slash/reward/transfer/time.

After every step: COV's total supply equals the sum of every holder's balance (people and contracts); the
Staking contract holds at least everything it owes; every bonded position and unbonding entry is worth what
an exact model (fractions) of pro-rata slashing says; and no account has withdrawn more than it put in
minus its share of the slashes. The contract's integer rounding may shift a few wei between holders, never
more than `ROUNDING_WEI_PER_STEP` per step played.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.types import RPCEndpoint

from covey.chain import Chain
from covey.errors import ChainError

COV = 10**18
OPERATORS = (0, 1)  # indices into suite.people
DELEGATORS = (2, 3)
STAKERS = OPERATORS + DELEGATORS
MODULE = 4
OUTSIDER = 5
ROLE = 1  # pools per role are independent; one role keeps the random walks dense
ROUNDING_WEI_PER_STEP = 2

# Reverts a random sequence may legitimately hit; anything else (an underflow, a bare revert) fails the test.
EXPECTED_REVERTS = {
    "staking: unbonding not finished",
    "staking: nothing to withdraw",
    "staking: operator has no self-stake",
    "staking: amount exceeds stake",
    "staking: no rewards to claim",
    "staking: too many unbonding entries",
    "staking: zero amount",
    "treasury: no epoch elapsed",
    "erc20: transfer amount exceeds balance",
}

amounts = st.integers(min_value=1, max_value=200 * COV)
portions = st.sampled_from([Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(1, 1)])
operators = st.sampled_from(OPERATORS)
delegators = st.sampled_from(DELEGATORS)
stakers = st.sampled_from(STAKERS)
exits = st.one_of(
    st.tuples(st.just("undelegate"), delegators, operators, portions),
    st.tuples(st.just("unbond"), operators, portions),
)
# Exits, slashes, withdrawals and time travel are drawn most: the interesting interleavings are there.
actions = st.one_of(
    exits,
    exits,
    st.tuples(st.just("slash"), operators, st.integers(min_value=1, max_value=100 * COV)),
    st.tuples(st.just("slash"), operators, st.integers(min_value=0, max_value=600 * COV)),
    st.tuples(st.just("withdraw"), stakers),
    st.tuples(st.just("withdraw"), stakers),
    st.tuples(st.just("time"), st.integers(min_value=1, max_value=150)),
    st.tuples(st.just("time"), st.just(3_601)),
    st.tuples(st.just("stake"), operators, amounts),
    st.tuples(st.just("delegate"), delegators, operators, amounts),
    st.tuples(st.just("reward"), operators, st.integers(min_value=1, max_value=50 * COV)),
    # A pool with no shares at all (nobody ever staked with the outsider) pays its operator everything.
    st.tuples(st.just("reward"), st.just(OUTSIDER), st.integers(min_value=1, max_value=50 * COV)),
    st.tuples(st.just("claim"), delegators, operators),
    st.tuples(st.just("transfer"), stakers, st.sampled_from((*STAKERS, OUTSIDER)), amounts),
    st.tuples(st.just("emission")),
)


@dataclass
class Entry:
    """One unbonding entry as the exact model sees it."""

    account: int
    operator: int
    ideal: Fraction
    release_at: int


@dataclass
class Model:
    """Exact (fractional) value of every position, so slashes are apportioned without rounding."""

    bonded: dict[tuple[int, int], Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    entries: list[Entry] = field(default_factory=list)
    deposited: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    withdrawn: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    withdrawn_ideal: dict[int, Fraction] = field(default_factory=lambda: defaultdict(Fraction))

    def slash(self, operator: int, at_stake: int, slashed: int) -> None:
        keep = Fraction(at_stake - slashed, at_stake)
        for holder, op in list(self.bonded):
            if op == operator:
                self.bonded[(holder, op)] *= keep
        for entry in self.entries:
            if entry.operator == operator:
                entry.ideal *= keep


class Story:
    """Random steps played on a suite, checking every invariant after each one."""

    def __init__(self, suite: Any, model: Model | None = None) -> None:
        self.suite = suite
        self.model = model or Model()
        self.steps = 0
        self.reverted = False
        self.staking = suite.staking.functions
        self.holders = [suite.owner.address, *(p.address for p in suite.people), suite.staking.address]
        self.holders.append(suite.treasury.address)

    def populate(self) -> None:
        """Fund everyone, register the module, and fill both pools, so short sequences already mix things."""
        s = self.suite
        for index in (*STAKERS, MODULE):
            s.give_cov(s.people[index], 1_000 * COV)
            s.send(s.cov.functions.approve(s.staking.address, 2**256 - 1), s.people[index])
        s.make_module(s.people[MODULE])
        for operator in OPERATORS:
            self.do_stake(operator, 100 * COV)
            for delegator in DELEGATORS:
                self.do_delegate(delegator, operator, 50 * COV)

    def address(self, index: int) -> str:
        return str(self.suite.people[index].address)

    def send(self, fn: Any, index: int) -> Any:
        """Send as person `index`; an expected revert returns None, an unexpected one fails the story."""
        try:
            return self.suite.send(fn, self.suite.people[index])
        except ChainError as exc:
            assert exc.reason in EXPECTED_REVERTS, f"unexpected revert: {exc}"
            self.reverted = True
            return None

    def play(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        self.reverted = False
        getattr(self, f"do_{kind}")(*args)
        self.steps += 1
        # A reverted transaction changed nothing, so there is nothing new to check.
        if not self.reverted:
            self.check()

    # -- actions --------------------------------------------------------------------------------------

    def do_stake(self, operator: int, amount: int) -> None:
        if self.send(self.staking.stake(ROLE, amount), operator):
            self.model.bonded[(operator, operator)] += amount
            self.model.deposited[operator] += amount

    def do_delegate(self, delegator: int, operator: int, amount: int) -> None:
        if self.send(self.staking.delegate(self.address(operator), ROLE, amount), delegator):
            self.model.bonded[(delegator, operator)] += amount
            self.model.deposited[delegator] += amount

    def do_undelegate(self, delegator: int, operator: int, portion: Fraction) -> None:
        held = self.staking.delegationOf(self.address(delegator), self.address(operator), ROLE).call()
        fn = self.staking.undelegate(self.address(operator), ROLE, int(held * portion))
        self._start_unbonding(fn, delegator, operator)

    def do_unbond(self, operator: int, portion: Fraction) -> None:
        held = self.staking.stakeOf(self.address(operator), ROLE).call()
        self._start_unbonding(self.staking.unbond(ROLE, int(held * portion)), operator, operator)

    def _start_unbonding(self, fn: Any, holder: int, operator: int) -> None:
        receipt = self.send(fn, holder)
        if receipt:
            [started] = self.suite.events(self.suite.staking, "UnbondingStarted", receipt)
            self.model.bonded[(holder, operator)] -= started["amount"]
            self.model.entries.append(Entry(holder, operator, Fraction(started["amount"]), started["release_at"]))

    def do_withdraw(self, account: int) -> None:
        receipt = self.send(self.staking.withdraw(), account)
        if receipt:
            now = self.suite.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
            matured = [e for e in self.model.entries if e.account == account and e.release_at <= now]
            self.model.entries = [e for e in self.model.entries if not any(e is m for m in matured)]
            paid = sum(event["amount"] for event in self.suite.events(self.suite.staking, "Withdrawn", receipt))
            self.model.withdrawn[account] += paid
            self.model.withdrawn_ideal[account] += sum((e.ideal for e in matured), Fraction(0))

    def do_slash(self, operator: int, amount: int) -> None:
        tokens, _, unbonding_tokens, _, _ = self.staking.pools(self.address(operator), ROLE).call()
        at_stake = tokens + unbonding_tokens
        receipt = self.send(self.staking.slash(self.address(operator), ROLE, amount, "fuzz"), MODULE)
        assert receipt, "a registered module's slash never reverts"
        slashed = sum(event["amount"] for event in self.suite.events(self.suite.staking, "Slashed", receipt))
        assert slashed == min(amount, at_stake)
        if slashed:
            self.model.slash(operator, at_stake, slashed)

    def do_reward(self, operator: int, amount: int) -> None:
        address = self.address(operator)
        shares = self.staking.pools(address, ROLE).call()[1]
        delegated = shares - self.staking.sharesOf(address, address, ROLE).call() if shares else 0
        receipt = self.send(self.staking.distributeReward(address, ROLE, amount), MODULE)
        assert receipt, "a module's reward to any operator never reverts"
        [paid] = self.suite.events(self.suite.staking, "RewardDistributed", receipt)
        assert paid["operator_amount"] + paid["delegators_amount"] == amount
        if delegated == 0:
            assert paid["operator_amount"] == amount, "a pool without delegators pays its operator everything"

    def do_claim(self, delegator: int, operator: int) -> None:
        self.send(self.staking.claimRewards(self.address(operator), ROLE), delegator)

    def do_transfer(self, sender: int, receiver: int, amount: int) -> None:
        self.send(self.suite.cov.functions.transfer(self.address(receiver), amount), sender)

    def do_time(self, seconds: int) -> None:
        self.suite.chain.increase_time(seconds)

    def do_emission(self) -> None:
        self.send(self.suite.treasury.functions.mintEmission(), OUTSIDER)

    # -- invariants -----------------------------------------------------------------------------------

    def check(self) -> None:
        cov, staking, model = self.suite.cov.functions, self.staking, self.model
        tolerance = ROUNDING_WEI_PER_STEP * (self.steps + 1)

        balances = {holder: cov.balanceOf(holder).call() for holder in self.holders}
        assert cov.totalSupply().call() == sum(balances.values()), "COV supply != sum of all balances"

        owed = 0
        for operator in OPERATORS:
            tokens, _shares, unbonding_tokens, _unbonding_shares, _rps = staking.pools(
                self.address(operator), ROLE
            ).call()
            owed += tokens + unbonding_tokens
            for delegator in DELEGATORS:
                owed += staking.pendingRewards(self.address(delegator), self.address(operator), ROLE).call()
        assert balances[self.suite.staking.address] >= owed, "Staking holds less than it owes"

        for (holder, operator), ideal in model.bonded.items():
            if holder == operator:
                actual = staking.stakeOf(self.address(holder), ROLE).call()
            else:
                actual = staking.delegationOf(self.address(holder), self.address(operator), ROLE).call()
            assert abs(actual - ideal) <= tolerance, f"{holder}@{operator} bonded {actual}, model {float(ideal)}"
        for account in STAKERS:
            on_chain = staking.pendingUnbonds(self.address(account)).call()
            modelled = [e for e in model.entries if e.account == account]
            assert len(on_chain) == len(modelled)
            for (_op, _role, _shares, tokens, release_at), entry in zip(on_chain, modelled, strict=True):
                assert release_at == entry.release_at
                assert abs(tokens - entry.ideal) <= tolerance, f"{account}'s unbonding {tokens} vs {float(entry.ideal)}"

            withdrawn = model.withdrawn[account]
            assert withdrawn <= model.withdrawn_ideal[account] + tolerance, (
                f"account {account} withdrew {withdrawn}, more than its stake after slashes "
                f"({float(model.withdrawn_ideal[account])})"
            )
            assert withdrawn <= model.deposited[account] + tolerance


class StorySource:
    """Hands every example a freshly populated suite.

    Deploying and populating costs ~25 transactions. Where the node can snapshot (anvil), that happens
    once and every example starts from the snapshot; elsewhere each example deploys its own suite.
    """

    def __init__(self, new_suite: Callable[[], Any], chain: Chain) -> None:
        self.new_suite = new_suite
        self.chain = chain
        self.snapshots = self._snapshot() is not None
        self._saved: tuple[Any, Model, str] | None = None

    def _snapshot(self) -> str | None:
        try:
            reply = self.chain.w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])
        except Exception:  # a backend without the method may raise instead of answering with an error
            return None
        result = reply.get("result") if isinstance(reply, dict) else None
        return str(result) if result else None

    def fresh(self) -> Story:
        if self._saved:
            suite, model, snapshot_id = self._saved
            self.chain.w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot_id])
            # anvil consumes a snapshot when reverting to it: take it again for the next example.
            self._saved = (suite, model, self._snapshot() or "")
            return Story(suite, copy.deepcopy(model))
        story = Story(self.new_suite())
        story.populate()
        story.check()
        if self.snapshots:
            self._saved = (story.suite, copy.deepcopy(story.model), self._snapshot() or "")
        return story


@pytest.fixture
def stories(new_suite: Callable[[], Any], chain: Chain) -> StorySource:
    return StorySource(new_suite, chain)


def test_money_is_conserved_under_random_sequences(stories: StorySource) -> None:
    # Without snapshots every example deploys a suite: fewer examples keep that backend's run near a minute.
    @settings(max_examples=20 if stories.snapshots else 8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=st.lists(actions, min_size=1, max_size=12))
    def play(steps: list[tuple[Any, ...]]) -> None:
        story = stories.fresh()
        for action in steps:
            story.play(action)

    play()
