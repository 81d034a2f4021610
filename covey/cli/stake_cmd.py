"""`covey stake ...`: stake COV for a role, delegate to operators, claim rewards, set commission, unbond, withdraw."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from covey.chain.roles import Role
from covey.chain.units import format_units, parse_amount
from covey.chain.wallets import parse_address
from covey.cli._context import Context, open_context
from covey.cli._output import console, print_json, table

app = typer.Typer(
    help="Staking: stake, delegate, claim rewards, commission, unbond, withdraw, show.", no_args_is_help=True
)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
FROM_OPTION = typer.Option(
    None, "--from", help="Signing account (wallet name, address or dev0..dev9); default COVEY_KEY."
)
ROLE_HELP = "trainer, validator, host, provider or participant"


def _approve_and(ctx: Context, signer_name: str | None, amount: int) -> tuple[object, object]:
    signer = ctx.signer(signer_name)
    token = ctx.deployment.contract(ctx.chain, "CoveyToken")
    staking = ctx.deployment.contract(ctx.chain, "Staking")
    ctx.chain.transact(token.functions.approve(staking.address, amount), signer)
    return signer, staking


def _done(as_json: bool, action: str, receipt: Mapping[str, Any], **fields: object) -> None:
    data = {"action": action, "tx": receipt["transactionHash"].hex(), "gasUsed": receipt["gasUsed"], **fields}
    if as_json:
        print_json(data)
    else:
        details = ", ".join(f"{key}={value}" for key, value in fields.items())
        console.print(f"{action}: {details} (tx {data['tx']}, gas {data['gasUsed']})")


@app.command()
def add(
    role: str = typer.Argument(..., help=ROLE_HELP),
    amount: str = typer.Argument(..., help="COV to stake, e.g. 100 or 12.5"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Stake your own COV for a role."""
    parsed_role, units = Role.parse(role), parse_amount(amount)
    with open_context() as ctx:
        signer, staking = _approve_and(ctx, from_, units)
        receipt = ctx.chain.transact(staking.functions.stake(parsed_role, units), signer)  # type: ignore[attr-defined, arg-type]
        _done(as_json, "staked", receipt, role=parsed_role.name.lower(), amount=amount)


@app.command()
def delegate(
    operator: str = typer.Argument(..., help="Operator address"),
    role: str = typer.Argument(..., help=ROLE_HELP),
    amount: str = typer.Argument(..., help="COV to delegate"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Delegate COV to an operator's stake for a role; you share its rewards minus its commission."""
    address, parsed_role, units = parse_address(operator), Role.parse(role), parse_amount(amount)
    with open_context() as ctx:
        signer, staking = _approve_and(ctx, from_, units)
        fn = staking.functions.delegate(address, parsed_role, units)  # type: ignore[attr-defined]
        receipt = ctx.chain.transact(fn, signer)  # type: ignore[arg-type]
        _done(as_json, "delegated", receipt, operator=address, role=parsed_role.name.lower(), amount=amount)


@app.command()
def undelegate(
    operator: str = typer.Argument(..., help="Operator address"),
    role: str = typer.Argument(..., help=ROLE_HELP),
    amount: str = typer.Argument(..., help="COV to undelegate (starts unbonding)"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Start unbonding delegated COV; withdraw it after the unbonding delay."""
    address, parsed_role, units = parse_address(operator), Role.parse(role), parse_amount(amount)
    with open_context() as ctx:
        signer = ctx.signer(from_)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        receipt = ctx.chain.transact(staking.functions.undelegate(address, parsed_role, units), signer)
        _done(as_json, "undelegated", receipt, operator=address, role=parsed_role.name.lower(), amount=amount)


@app.command()
def unbond(
    role: str = typer.Argument(..., help=ROLE_HELP),
    amount: str = typer.Argument(..., help="COV of your own stake to unbond"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Start unbonding your own stake; it stays slashable until you withdraw it after the delay."""
    parsed_role, units = Role.parse(role), parse_amount(amount)
    with open_context() as ctx:
        signer = ctx.signer(from_)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        receipt = ctx.chain.transact(staking.functions.unbond(parsed_role, units), signer)
        _done(as_json, "unbonding", receipt, role=parsed_role.name.lower(), amount=amount)


@app.command()
def withdraw(from_: str | None = FROM_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Withdraw every unbonding entry whose delay has passed."""
    with open_context() as ctx:
        signer = ctx.signer(from_)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        receipt = ctx.chain.transact(staking.functions.withdraw(), signer)
        _done(as_json, "withdrawn", receipt)


@app.command()
def claim(
    operator: str = typer.Argument(..., help="Operator you delegated to (address, wallet name or dev0..dev9)"),
    role: str = typer.Argument(..., help=ROLE_HELP),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Claim the rewards your delegation to an operator has earned (its rewards minus its commission)."""
    parsed_role = Role.parse(role)
    with open_context() as ctx:
        address = _resolve(ctx, operator)
        signer = ctx.signer(from_)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        receipt = ctx.chain.transact(staking.functions.claimRewards(address, parsed_role), signer)
        (claimed,) = staking.events.RewardsClaimed().process_receipt(receipt)
        amount = int(claimed["args"]["amount"])
        _done(as_json, "claimed", receipt, operator=address, role=parsed_role.name.lower(), amount=format_units(amount))


@app.command()
def rewards(
    operator: str = typer.Argument(..., help="Operator (address, wallet name or dev0..dev9)"),
    role: str = typer.Argument(..., help=ROLE_HELP),
    account: str = typer.Option(..., "--account", help="Delegator (address, wallet name or dev0..dev9)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a delegator's delegation to an operator and the rewards it can claim now."""
    parsed_role = Role.parse(role)
    with open_context() as ctx:
        delegator, address = _resolve(ctx, account), _resolve(ctx, operator)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        data: dict[str, Any] = {
            "delegator": delegator,
            "operator": address,
            "role": parsed_role.name.lower(),
            "delegated": int(staking.functions.delegationOf(delegator, address, parsed_role).call()),
            "pending": int(staking.functions.pendingRewards(delegator, address, parsed_role).call()),
        }
        if as_json:
            print_json(data)
            return
        console.print(
            f"{delegator} delegates {format_units(data['delegated'])} COV to {address} as {data['role']}; "
            f"claimable rewards: {format_units(data['pending'])} COV"
        )


@app.command()
def commission(
    percent: float = typer.Argument(..., help="Commission on delegators' rewards, in percent (e.g. 10)"),
    from_: str | None = FROM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Set your operator commission; the change takes effect after the commission delay."""
    from covey.errors import ValidationError

    if not 0 <= percent <= 100:
        raise ValidationError(f"commission must be between 0 and 100 percent, got {percent}")
    bps = round(percent * 100)
    with open_context() as ctx:
        signer = ctx.signer(from_)
        staking = ctx.deployment.contract(ctx.chain, "Staking")
        receipt = ctx.chain.transact(staking.functions.setCommission(bps), signer)
        _done(as_json, "commission scheduled", receipt, bps=bps)


@app.command()
def show(
    account: str = typer.Argument(..., help="Address, wallet name or dev0..dev9"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show an account's stake per role, effective stake, commission and pending unbonds."""
    with open_context() as ctx:
        data = stake_report(ctx, _resolve(ctx, account))
        if as_json:
            print_json(data)
            return
        rows = [
            (role, format_units(entry["self"]), format_units(entry["effective"]))
            for role, entry in data["roles"].items()
        ]
        console.print(table(f"Stake of {data['address']}", ["role", "self COV", "effective COV"], rows))
        unbonds = [(format_units(u["amount"]), u["releaseTime"]) for u in data["unbonding"]]
        if unbonds:
            console.print(table("Unbonding", ["COV", "release time"], unbonds))
        console.print(f"commission: {data['commissionBps'] / 100:.2f}%")


def _resolve(ctx: Context, account: str) -> str:
    """An address from an address, a wallet name or dev0..dev9."""
    return parse_address(account) if account.startswith("0x") else ctx.keystore.find(account).address


def stake_report(ctx: Context, address: str) -> dict:
    """Stake facts for one account, as plain data (token units)."""
    staking = ctx.deployment.contract(ctx.chain, "Staking")
    roles = {
        role.name.lower(): {
            "self": int(staking.functions.stakeOf(address, role).call()),
            "effective": int(staking.functions.effectiveStake(address, role).call()),
        }
        for role in Role
    }
    commission_info = staking.functions.commissionOf(address).call()
    current_bps = commission_info[0] if isinstance(commission_info, list | tuple) else commission_info
    unbonding = [
        {"amount": int(entry[-2]), "releaseTime": int(entry[-1])}
        for entry in staking.functions.pendingUnbonds(address).call()
    ]
    return {"address": address, "roles": roles, "commissionBps": int(current_bps), "unbonding": unbonding}
