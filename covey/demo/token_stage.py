"""Demo stage 1, the token economy: fund, stake, delegate, commission, slash, reward, emission, unbond, withdraw."""

from __future__ import annotations

from typing import Any

from web3.logs import DISCARD

from covey.chain.faucet import fund
from covey.chain.roles import Role
from covey.chain.units import COV, format_units
from covey.demo.accounts import actors, holdings, holdings_json, holdings_table
from covey.demo.runner import DemoContext


def token_stage(ctx: DemoContext) -> dict[str, Any]:
    """Play the token economy on the deployed suite and print who holds what before and after."""
    chain, suite, say = ctx.chain, ctx.deployment, ctx.console.print
    people = actors()
    owner, alice, bob, carol, referee = (people[n] for n in ("owner", "alice", "bob", "carol", "referee"))
    cov = suite.contract(chain, "CoveyToken")
    staking = suite.contract(chain, "Staking")
    treasury = suite.contract(chain, "Treasury")
    cast = {"alice": alice, "bob": bob, "carol": carol}
    operators = [alice.address, carol.address]

    for account in (*cast.values(), referee):
        fund(chain, suite, account.address)
    say("faucet: alice, bob, carol and a referee module each got 10 ETH, 1,000 USD and 10,000 COV")
    before = {name: holdings(chain, suite, a.address, operators) for name, a in cast.items()}
    treasury_before = int(cov.functions.balanceOf(treasury.address).call())

    def act(account: Any, fn: Any) -> None:
        chain.transact(fn, account)

    act(alice, cov.functions.approve(staking.address, 1_000 * COV))
    act(alice, staking.functions.stake(Role.VALIDATOR, 1_000 * COV))
    act(alice, staking.functions.setCommission(1_000))
    delay_s = int(staking.functions.commissionDelay().call())
    say(f"alice stakes 1,000 COV as a validator and asks 10% commission (in force after the {delay_s} s delay)")
    effective_at = int(staking.functions.commissionOf(alice.address).call()[2])
    ctx.wait_until(effective_at, "alice's new commission to take effect")

    act(bob, cov.functions.approve(staking.address, 500 * COV))
    act(bob, staking.functions.delegate(alice.address, Role.VALIDATOR, 500 * COV))
    say(
        "bob delegates 500 COV to alice: her effective stake is now "
        f"{format_units(int(staking.functions.effectiveStake(alice.address, Role.VALIDATOR).call()))} COV"
    )

    act(carol, cov.functions.approve(staking.address, 400 * COV))
    act(carol, staking.functions.stake(Role.TRAINER, 400 * COV))
    act(carol, staking.functions.unbond(Role.TRAINER, 100 * COV))
    say("carol stakes 400 COV as a trainer and starts unbonding 100 (slashable until withdrawn)")

    if not staking.functions.isModule(referee.address).call():
        act(owner, staking.functions.setModule(referee.address, True))
    act(referee, staking.functions.slash(alice.address, Role.VALIDATOR, 150 * COV, "demo: scores far from consensus"))
    say(
        "the referee module slashes alice's validator pool 150 COV: alice and bob lose pro rata (100 and 50), "
        "and the tokens go to the Treasury"
    )

    act(referee, cov.functions.approve(staking.address, 300 * COV))
    act(referee, staking.functions.distributeReward(alice.address, Role.VALIDATOR, 300 * COV))
    pending_bob = int(staking.functions.pendingRewards(bob.address, alice.address, Role.VALIDATOR).call())
    act(bob, staking.functions.claimRewards(alice.address, Role.VALIDATOR))
    say(f"a 300 COV reward to alice's pool: bob's share after her 10% commission is {format_units(pending_bob)} COV")

    epoch_s = int(treasury.functions.epochLength().call())
    epoch_end = int(treasury.functions.lastEmissionAt().call()) + epoch_s
    ctx.wait_until(epoch_end, f"the Treasury's {epoch_s} s emission epoch to end")
    minted = chain.transact(treasury.functions.mintEmission(), owner)
    mints = treasury.events.EmissionMinted().process_receipt(minted, errors=DISCARD)
    emission = sum(int(event["args"]["amount"]) for event in mints)
    unbonding = staking.functions.pendingUnbonds(carol.address).call()
    release_at = max((int(entry[4]) for entry in unbonding), default=0)
    ctx.wait_until(release_at, "carol's unbonding delay to pass")
    act(carol, staking.functions.withdraw())
    say(
        f"an emission epoch on, the Treasury mints {format_units(emission)} COV; after the "
        f"{int(staking.functions.unbondingDelay().call())} s unbonding delay carol withdraws 100 COV"
    )

    after = {name: holdings(chain, suite, a.address, operators) for name, a in cast.items()}
    ctx.console.print(holdings_table("Token economy: COV positions before and after", before, after))
    treasury_after = int(cov.functions.balanceOf(treasury.address).call())
    say(
        f"treasury: {format_units(treasury_before)} -> {format_units(treasury_after)} COV "
        f"(slashes and emission); total supply {format_units(int(cov.functions.totalSupply().call()))} COV"
    )
    return {
        "before": holdings_json(before),
        "after": holdings_json(after),
        "treasury_before": treasury_before,
        "treasury_after": treasury_after,
        "bob_reward": pending_bob,
    }
