"""Staking: stake and delegate per role, commission with a delay, unbonding, pro-rata slashing, rewards.

Modules (Arena, Alliance, Market) are played by plain dev keys the owner registers with `setModule`.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount

COV = 10**18
VALIDATOR, HOST = 1, 2
ZERO = "0x" + "00" * 20
# Share conversions round in the pool's favour, so after a slash one exit may come out a wei short and the
# last one out collects that wei.
ROUNDING_WEI = 2


def staking_view(suite: Any, name: str, *args: Any) -> Any:
    return getattr(suite.staking.functions, name)(*args).call()


def fund_module(suite: Any, module: LocalAccount, amount: int) -> None:
    """Give a module COV to reward with and let Staking pull it."""
    suite.give_cov(module, amount)
    suite.send(suite.cov.functions.approve(suite.staking.address, amount), module)


# -- staking and delegating -----------------------------------------------------------------------------


def test_a_stake_counts_as_self_stake_and_effective_stake(suite) -> None:
    operator = suite.people[0]
    receipt = suite.stake(operator, VALIDATOR, 100 * COV)

    assert staking_view(suite, "stakeOf", operator.address, VALIDATOR) == 100 * COV
    assert staking_view(suite, "effectiveStake", operator.address, VALIDATOR) == 100 * COV
    assert staking_view(suite, "totalStaked", VALIDATOR) == 100 * COV
    # Stake is per role: the same account has none as a host.
    assert staking_view(suite, "stakeOf", operator.address, HOST) == 0
    assert suite.balance(suite.staking.address) == 100 * COV
    [staked] = suite.events(suite.staking, "Staked", receipt)
    assert (staked["account"], staked["role"], staked["amount"]) == (operator.address, VALIDATOR, 100 * COV)


def test_staking_refuses_bad_roles_zero_amounts_and_missing_approval(suite) -> None:
    operator = suite.people[0]
    suite.give_cov(operator, 10 * COV)
    stake = suite.staking.functions.stake
    assert suite.reverts(stake(VALIDATOR, 10 * COV), operator) == "erc20: insufficient allowance"
    suite.send(suite.cov.functions.approve(suite.staking.address, 10 * COV), operator)
    assert suite.reverts(stake(5, COV), operator) == "staking: unknown role"
    assert suite.reverts(stake(VALIDATOR, 0), operator) == "staking: zero amount"
    assert suite.reverts(stake(VALIDATOR, 11 * COV), operator) == "erc20: insufficient allowance"


def test_delegation_adds_to_the_operators_effective_stake(suite) -> None:
    operator, alice, bob = suite.people[:3]
    suite.stake(operator, VALIDATOR, 100 * COV)
    receipt = suite.delegate(alice, operator, VALIDATOR, 50 * COV)
    suite.delegate(bob, operator, VALIDATOR, 30 * COV)

    assert staking_view(suite, "effectiveStake", operator.address, VALIDATOR) == 180 * COV
    assert staking_view(suite, "stakeOf", operator.address, VALIDATOR) == 100 * COV
    assert staking_view(suite, "delegationOf", alice.address, operator.address, VALIDATOR) == 50 * COV
    assert staking_view(suite, "delegationOf", bob.address, operator.address, VALIDATOR) == 30 * COV
    # Delegating does not make the delegator an operator.
    assert staking_view(suite, "stakeOf", alice.address, VALIDATOR) == 0
    [delegated] = suite.events(suite.staking, "Delegated", receipt)
    assert (delegated["delegator"], delegated["operator"], delegated["amount"]) == (
        alice.address,
        operator.address,
        50 * COV,
    )


def test_delegation_needs_an_operator_with_self_stake(suite) -> None:
    operator, alice = suite.people[:2]
    suite.give_cov(alice, 10 * COV)
    suite.send(suite.cov.functions.approve(suite.staking.address, 10 * COV), alice)
    delegate = suite.staking.functions.delegate
    assert suite.reverts(delegate(operator.address, VALIDATOR, COV), alice) == "staking: operator has no self-stake"
    assert suite.reverts(delegate(alice.address, VALIDATOR, COV), alice) == "staking: cannot delegate to self"
    suite.stake(operator, HOST, COV)
    # Self-stake as a host does not make a validator pool.
    assert suite.reverts(delegate(operator.address, VALIDATOR, COV), alice) == "staking: operator has no self-stake"
    assert suite.reverts(delegate(operator.address, HOST, 0), alice) == "staking: zero amount"


# -- commission -----------------------------------------------------------------------------------------


def test_commission_is_bounded_and_takes_effect_after_the_delay(suite) -> None:
    operator = suite.people[0]
    assert staking_view(suite, "commissionOf", operator.address) == [0, 0, 0]
    assert suite.reverts(suite.staking.functions.setCommission(5_001), operator) == "staking: commission above max"

    receipt = suite.send(suite.staking.functions.setCommission(1_000), operator)
    queued_at = suite.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    effective_at = queued_at + suite.commission_delay_s
    [queued] = suite.events(suite.staking, "CommissionChangeQueued", receipt)
    assert (queued["rate_bps"], queued["effective_at"]) == (1_000, effective_at)
    assert staking_view(suite, "commissionOf", operator.address) == [0, 1_000, effective_at]

    suite.chain.increase_time(suite.commission_delay_s)
    assert staking_view(suite, "commissionOf", operator.address) == [1_000, 0, 0]

    # The maximum itself is allowed.
    suite.send(suite.staking.functions.setCommission(5_000), operator)
    current, pending, _ = staking_view(suite, "commissionOf", operator.address)
    assert (current, pending) == (1_000, 5_000)


# -- unbonding and withdrawing --------------------------------------------------------------------------


def test_unbonded_stake_is_withdrawable_only_after_the_delay(suite) -> None:
    operator = suite.people[0]
    suite.stake(operator, VALIDATOR, 100 * COV)
    receipt = suite.send(suite.staking.functions.unbond(VALIDATOR, 40 * COV), operator)
    release_at = suite.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] + suite.unbonding_delay_s
    [started] = suite.events(suite.staking, "UnbondingStarted", receipt)
    assert (started["amount"], started["release_at"]) == (40 * COV, release_at)

    # Unbonding stake no longer counts, but has not left the contract.
    assert staking_view(suite, "stakeOf", operator.address, VALIDATOR) == 60 * COV
    assert staking_view(suite, "effectiveStake", operator.address, VALIDATOR) == 60 * COV
    assert staking_view(suite, "totalStaked", VALIDATOR) == 60 * COV
    [entry] = staking_view(suite, "pendingUnbonds", operator.address)
    operator_address, role, _shares, tokens, entry_release = entry
    assert (operator_address, role, tokens, entry_release) == (operator.address, VALIDATOR, 40 * COV, release_at)

    assert suite.reverts(suite.staking.functions.withdraw(), operator) == "staking: unbonding not finished"
    suite.chain.increase_time(suite.unbonding_delay_s)
    before = suite.balance(operator.address)
    receipt = suite.send(suite.staking.functions.withdraw(), operator)
    assert suite.balance(operator.address) - before == 40 * COV
    [withdrawn] = suite.events(suite.staking, "Withdrawn", receipt)
    assert withdrawn["amount"] == 40 * COV
    assert staking_view(suite, "pendingUnbonds", operator.address) == []
    assert suite.reverts(suite.staking.functions.withdraw(), operator) == "staking: nothing to withdraw"


def test_withdraw_pays_matured_entries_and_keeps_the_rest(suite) -> None:
    operator, alice = suite.people[:2]
    suite.stake(operator, VALIDATOR, 100 * COV)
    suite.delegate(alice, operator, VALIDATOR, 50 * COV)
    suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 10 * COV), alice)
    suite.chain.increase_time(suite.unbonding_delay_s // 2)
    suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 15 * COV), alice)
    suite.chain.increase_time(suite.unbonding_delay_s // 2)

    before = suite.balance(alice.address)
    suite.send(suite.staking.functions.withdraw(), alice)
    assert suite.balance(alice.address) - before == 10 * COV
    [(_, _, _, still_pending, _)] = staking_view(suite, "pendingUnbonds", alice.address)
    assert still_pending == 15 * COV
    assert staking_view(suite, "delegationOf", alice.address, operator.address, VALIDATOR) == 25 * COV


def test_unbonding_refuses_more_than_staked_and_the_wrong_entry_point(suite) -> None:
    operator, alice = suite.people[:2]
    suite.stake(operator, VALIDATOR, 10 * COV)
    suite.delegate(alice, operator, VALIDATOR, 5 * COV)
    staking = suite.staking.functions
    assert suite.reverts(staking.unbond(VALIDATOR, 10 * COV + 1), operator) == "staking: amount exceeds stake"
    assert suite.reverts(staking.unbond(HOST, 1), operator) == "staking: amount exceeds stake"
    assert suite.reverts(staking.unbond(VALIDATOR, 0), operator) == "staking: zero amount"
    assert suite.reverts(staking.unbond(7, 1), operator) == "staking: unknown role"
    assert suite.reverts(staking.undelegate(operator.address, VALIDATOR, 6 * COV), alice) == (
        "staking: amount exceeds stake"
    )
    assert suite.reverts(staking.undelegate(operator.address, VALIDATOR, COV), operator) == (
        "staking: use unbond for self-stake"
    )


def test_unbonding_entries_per_account_are_capped(suite) -> None:
    operator = suite.people[0]
    suite.stake(operator, VALIDATOR, 100 * COV)
    cap = staking_view(suite, "MAX_UNBONDINGS")
    assert cap == 32
    for _ in range(cap):
        suite.send(suite.staking.functions.unbond(VALIDATOR, COV), operator)
    assert suite.reverts(suite.staking.functions.unbond(VALIDATOR, COV), operator) == (
        "staking: too many unbonding entries"
    )
    # Withdrawing frees the slots again, and the full loop stays cheap.
    suite.chain.increase_time(suite.unbonding_delay_s)
    receipt = suite.send(suite.staking.functions.withdraw(), operator)
    assert receipt["gasUsed"] < 1_000_000
    suite.send(suite.staking.functions.unbond(VALIDATOR, COV), operator)


def test_a_new_unbonding_delay_applies_to_new_entries_only(suite) -> None:
    operator = suite.people[0]
    suite.stake(operator, VALIDATOR, 10 * COV)
    suite.send(suite.staking.functions.unbond(VALIDATOR, COV), operator)
    suite.send(suite.staking.functions.setUnbondingDelay(10 * suite.unbonding_delay_s), suite.owner)
    suite.send(suite.staking.functions.unbond(VALIDATOR, COV), operator)
    suite.chain.increase_time(suite.unbonding_delay_s)
    before = suite.balance(operator.address)
    suite.send(suite.staking.functions.withdraw(), operator)
    assert suite.balance(operator.address) - before == COV
    assert len(staking_view(suite, "pendingUnbonds", operator.address)) == 1


# -- slashing -------------------------------------------------------------------------------------------


def test_a_slash_hits_self_stake_delegators_and_unbonding_stake_pro_rata(suite) -> None:
    operator, alice, bob, arena = suite.people[:4]
    suite.make_module(arena)
    suite.stake(operator, VALIDATOR, 600 * COV)
    suite.delegate(alice, operator, VALIDATOR, 300 * COV)
    suite.delegate(bob, operator, VALIDATOR, 100 * COV)
    # Bob tries to leave before the slash lands: his unbonding stake is still on the hook.
    suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 100 * COV), bob)
    treasury_before = suite.balance(suite.treasury.address)

    slash = suite.staking.functions.slash(operator.address, VALIDATOR, 100 * COV, "junk submission")
    assert slash.call({"from": arena.address}) == 100 * COV
    receipt = suite.send(slash, arena)

    assert staking_view(suite, "stakeOf", operator.address, VALIDATOR) == 540 * COV
    assert staking_view(suite, "delegationOf", alice.address, operator.address, VALIDATOR) == 270 * COV
    [(_, _, _, bob_unbonding, _)] = staking_view(suite, "pendingUnbonds", bob.address)
    assert bob_unbonding == 90 * COV
    assert staking_view(suite, "effectiveStake", operator.address, VALIDATOR) == 810 * COV
    assert staking_view(suite, "totalStaked", VALIDATOR) == 810 * COV
    assert suite.balance(suite.treasury.address) - treasury_before == 100 * COV
    [slashed] = suite.events(suite.staking, "Slashed", receipt)
    assert slashed == {
        "account": operator.address,
        "role": VALIDATOR,
        "amount": 100 * COV,
        "reason": "junk submission",
        "module": arena.address,
    }

    # Everyone leaves with what the slash left them, to the wei that share rounding moves between them;
    # together they never get more than the 900 COV that was left.
    suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 270 * COV), alice)
    suite.send(suite.staking.functions.unbond(VALIDATOR, 540 * COV), operator)
    suite.chain.increase_time(suite.unbonding_delay_s)
    paid_out = 0
    for person, expected in ((operator, 540 * COV), (alice, 270 * COV), (bob, 90 * COV)):
        before = suite.balance(person.address)
        suite.send(suite.staking.functions.withdraw(), person)
        received = suite.balance(person.address) - before
        assert abs(received - expected) <= ROUNDING_WEI
        paid_out += received
    assert 900 * COV - 3 * ROUNDING_WEI <= paid_out <= 900 * COV


def test_a_slash_never_takes_more_than_there_is(suite) -> None:
    operator, alice, arena = suite.people[:3]
    suite.make_module(arena)
    suite.stake(operator, VALIDATOR, 30 * COV)
    suite.delegate(alice, operator, VALIDATOR, 10 * COV)
    treasury_before = suite.balance(suite.treasury.address)

    slash = suite.staking.functions.slash(operator.address, VALIDATOR, 1_000 * COV, "double sign")
    assert slash.call({"from": arena.address}) == 40 * COV
    suite.send(slash, arena)
    assert suite.balance(suite.treasury.address) - treasury_before == 40 * COV
    assert staking_view(suite, "effectiveStake", operator.address, VALIDATOR) == 0
    assert staking_view(suite, "delegationOf", alice.address, operator.address, VALIDATOR) == 0

    # Nothing left: the module gets 0 back and no event, not a revert that would break its loop.
    again = suite.send(slash, arena)
    assert slash.call({"from": arena.address}) == 0
    assert suite.events(suite.staking, "Slashed", again) == []

    # A wiped pool takes fresh stake at a fair price.
    suite.stake(operator, VALIDATOR, 5 * COV)
    assert staking_view(suite, "stakeOf", operator.address, VALIDATOR) == 5 * COV


def test_only_registered_modules_may_slash_or_reward(suite) -> None:
    operator, impostor, arena = suite.people[:3]
    suite.stake(operator, VALIDATOR, 10 * COV)
    slash = suite.staking.functions.slash(operator.address, VALIDATOR, COV, "no reason")
    reward = suite.staking.functions.distributeReward(operator.address, VALIDATOR, COV)
    assert suite.reverts(slash, impostor) == "staking: caller is not a module"
    assert suite.reverts(reward, impostor) == "staking: caller is not a module"
    assert suite.reverts(suite.staking.functions.setModule(impostor.address, True), impostor) == (
        "ownable: caller is not the owner"
    )

    receipt = suite.send(suite.staking.functions.setModule(arena.address, True), suite.owner)
    assert suite.events(suite.staking, "ModuleSet", receipt) == [{"module": arena.address, "enabled": True}]
    suite.send(slash, arena)
    suite.send(suite.staking.functions.setModule(arena.address, False), suite.owner)
    assert suite.reverts(slash, arena) == "staking: caller is not a module"
    assert suite.reverts(suite.staking.functions.slash(operator.address, 9, COV, "x"), suite.make_module(arena)) == (
        "staking: unknown role"
    )


# -- rewards --------------------------------------------------------------------------------------------


def test_rewards_pay_the_operator_its_share_plus_commission_and_accrue_to_delegators(suite) -> None:
    operator, alice, bob, arena = suite.people[:4]
    suite.make_module(arena)
    suite.stake(operator, VALIDATOR, 300 * COV)
    suite.delegate(alice, operator, VALIDATOR, 75 * COV)
    suite.delegate(bob, operator, VALIDATOR, 25 * COV)
    suite.send(suite.staking.functions.setCommission(2_000), operator)
    suite.chain.increase_time(suite.commission_delay_s)
    fund_module(suite, arena, 100 * COV)

    operator_before = suite.balance(operator.address)
    receipt = suite.send(suite.staking.functions.distributeReward(operator.address, VALIDATOR, 100 * COV), arena)
    # 75 for the self-stake, 20% of the delegators' 25 as commission, 20 left for the delegators.
    assert suite.balance(operator.address) - operator_before == 80 * COV
    [event] = suite.events(suite.staking, "RewardDistributed", receipt)
    assert (event["amount"], event["operator_amount"], event["commission"], event["delegators_amount"]) == (
        100 * COV,
        80 * COV,
        5 * COV,
        20 * COV,
    )
    assert staking_view(suite, "pendingRewards", alice.address, operator.address, VALIDATOR) == 15 * COV
    assert staking_view(suite, "pendingRewards", bob.address, operator.address, VALIDATOR) == 5 * COV

    before = suite.balance(alice.address)
    receipt = suite.send(suite.staking.functions.claimRewards(operator.address, VALIDATOR), alice)
    assert suite.balance(alice.address) - before == 15 * COV
    assert suite.events(suite.staking, "RewardsClaimed", receipt)[0]["amount"] == 15 * COV
    assert staking_view(suite, "pendingRewards", alice.address, operator.address, VALIDATOR) == 0
    claim = suite.staking.functions.claimRewards(operator.address, VALIDATOR)
    assert suite.reverts(claim, alice) == "staking: no rewards to claim"

    # Rewards already earned survive leaving the pool; new ones go only to who is still bonded.
    suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 25 * COV), bob)
    fund_module(suite, arena, 40 * COV)
    suite.send(suite.staking.functions.distributeReward(operator.address, VALIDATOR, 40 * COV), arena)
    assert staking_view(suite, "pendingRewards", bob.address, operator.address, VALIDATOR) == 5 * COV
    # Alice now holds 75 of 375 bonded: 8 COV gross, minus 20% commission (6.4, rounded down to the wei).
    alice_pending = staking_view(suite, "pendingRewards", alice.address, operator.address, VALIDATOR)
    assert 64 * COV // 10 - ROUNDING_WEI <= alice_pending <= 64 * COV // 10


def test_commission_changes_do_not_touch_rewards_before_they_take_effect(suite) -> None:
    operator, alice, arena = suite.people[:3]
    suite.make_module(arena)
    suite.stake(operator, VALIDATOR, 50 * COV)
    suite.delegate(alice, operator, VALIDATOR, 50 * COV)
    suite.send(suite.staking.functions.setCommission(5_000), operator)
    fund_module(suite, arena, 20 * COV)

    suite.send(suite.staking.functions.distributeReward(operator.address, VALIDATOR, 10 * COV), arena)
    assert staking_view(suite, "pendingRewards", alice.address, operator.address, VALIDATOR) == 5 * COV
    suite.chain.increase_time(suite.commission_delay_s)
    suite.send(suite.staking.functions.distributeReward(operator.address, VALIDATOR, 10 * COV), arena)
    assert staking_view(suite, "pendingRewards", alice.address, operator.address, VALIDATOR) == 75 * COV // 10


def test_a_pool_without_shares_pays_its_operator_the_whole_reward(suite) -> None:
    operator, arena = suite.people[:2]  # the operator never staked: its pool has no shares at all
    suite.make_module(arena)
    fund_module(suite, arena, 10 * COV)

    receipt = suite.send(suite.staking.functions.distributeReward(operator.address, VALIDATOR, 4 * COV), arena)

    [paid] = suite.events(suite.staking, "RewardDistributed", receipt)
    assert (paid["operator_amount"], paid["commission"], paid["delegators_amount"]) == (4 * COV, 0, 0)
    assert suite.cov.functions.balanceOf(operator.address).call() == 4 * COV


def test_reward_reverts(suite) -> None:
    operator, arena = suite.people[:2]
    suite.make_module(arena)
    fund_module(suite, arena, 10 * COV)
    reward = suite.staking.functions.distributeReward
    suite.stake(operator, VALIDATOR, COV)
    assert suite.reverts(reward(operator.address, VALIDATOR, 0), arena) == "staking: zero amount"
    assert suite.reverts(reward(operator.address, 5, COV), arena) == "staking: unknown role"
    assert suite.reverts(reward(operator.address, VALIDATOR, 11 * COV), arena) == "erc20: insufficient allowance"
    # With no delegators the whole reward is the operator's.
    before = suite.balance(operator.address)
    suite.send(reward(operator.address, VALIDATOR, 10 * COV), arena)
    assert suite.balance(operator.address) - before == 10 * COV


# -- owner settings -------------------------------------------------------------------------------------


def test_owner_settings_stay_within_bounds(suite) -> None:
    staking, owner, stranger = suite.staking.functions, suite.owner, suite.people[0]
    assert suite.reverts(staking.setUnbondingDelay(0), owner) == "staking: unbonding delay out of bounds"
    assert suite.reverts(staking.setUnbondingDelay(60 * 86_400 + 1), owner) == "staking: unbonding delay out of bounds"
    assert (
        suite.reverts(staking.setCommissionDelay(30 * 86_400 + 1), owner) == "staking: commission delay out of bounds"
    )
    assert suite.reverts(staking.setTreasury(ZERO), owner) == "staking: treasury is the zero address"
    assert suite.reverts(staking.setModule(ZERO, True), owner) == "staking: module is the zero address"
    for call in (staking.setUnbondingDelay(5), staking.setCommissionDelay(5), staking.setTreasury(stranger.address)):
        assert suite.reverts(call, stranger) == "ownable: caller is not the owner"

    receipt = suite.send(staking.setUnbondingDelay(7 * 86_400), owner)
    assert suite.events(suite.staking, "UnbondingDelaySet", receipt) == [{"delay_s": 7 * 86_400}]
    suite.send(staking.setCommissionDelay(0), owner)
    assert (staking.unbondingDelay().call(), staking.commissionDelay().call()) == (7 * 86_400, 0)
    assert staking.treasury().call() == suite.treasury.address


# -- gas ------------------------------------------------------------------------------------------------


def test_gas_per_operation_stays_bounded(suite) -> None:
    """Records what each user-facing operation costs (run with -s to see it); ceilings catch regressions."""
    operator, alice, arena = suite.people[:3]
    suite.make_module(arena)
    gas = {
        "stake (first)": suite.stake(operator, VALIDATOR, 100 * COV)["gasUsed"],
        "stake (top-up)": suite.stake(operator, VALIDATOR, 100 * COV)["gasUsed"],
        "delegate (first)": suite.delegate(alice, operator, VALIDATOR, 50 * COV)["gasUsed"],
        "delegate (top-up)": suite.delegate(alice, operator, VALIDATOR, 50 * COV)["gasUsed"],
        "unbond": suite.send(suite.staking.functions.unbond(VALIDATOR, 10 * COV), operator)["gasUsed"],
        "undelegate": suite.send(suite.staking.functions.undelegate(operator.address, VALIDATOR, 10 * COV), alice)[
            "gasUsed"
        ],
        "slash": suite.send(suite.staking.functions.slash(operator.address, VALIDATOR, COV, "gas"), arena)["gasUsed"],
    }
    fund_module(suite, arena, 10 * COV)
    gas["distributeReward"] = suite.send(
        suite.staking.functions.distributeReward(operator.address, VALIDATOR, 10 * COV), arena
    )["gasUsed"]
    gas["claimRewards"] = suite.send(suite.staking.functions.claimRewards(operator.address, VALIDATOR), alice)[
        "gasUsed"
    ]
    suite.chain.increase_time(suite.unbonding_delay_s)
    gas["withdraw (1 entry)"] = suite.send(suite.staking.functions.withdraw(), operator)["gasUsed"]
    gas["transfer COV"] = suite.send(suite.cov.functions.transfer(alice.address, COV), operator)["gasUsed"]
    print("\n" + "\n".join(f"{name:>20}: {used:>7,}" for name, used in gas.items()))
    for name, used in gas.items():
        assert used < 250_000, f"{name} costs {used} gas"
