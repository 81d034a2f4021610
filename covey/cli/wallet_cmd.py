"""`covey wallet ...`: create, list and inspect keystore wallets; fund addresses on local chains."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import typer

from covey.chain.faucet import FAUCET_AMOUNTS, fund
from covey.chain.units import COV_DECIMALS, USD_DECIMALS, format_units
from covey.chain.wallets import parse_address
from covey.cli._context import Context, open_context
from covey.cli._output import console, print_json, table
from covey.errors import WalletError

app = typer.Typer(help="Wallets: encrypted keys under COVEY_HOME/keys, balances, the dev faucet.", no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


@app.command()
def new(name: str = typer.Argument(..., help="A name for the wallet."), as_json: bool = JSON_OPTION) -> None:
    """Create a wallet with a new random key, encrypted with COVEY_PASSWORD or a typed password."""
    with open_context() as ctx:
        password = ctx.settings.password
        if password is None:
            if not sys.stdin.isatty():
                raise WalletError("no password: set COVEY_PASSWORD or run in a terminal")
            password = getpass.getpass("new password: ")
            if getpass.getpass("repeat password: ") != password:
                raise WalletError("the passwords differ")
        wallet = ctx.keystore.create(name, password)
        if as_json:
            print_json({"name": wallet.name, "address": wallet.address, "keyfile": str(wallet.path)})
        else:
            console.print(f"created wallet [bold]{wallet.name}[/] {wallet.address}")


@app.command("list")
def list_(as_json: bool = JSON_OPTION) -> None:
    """List the stored wallets (names and addresses only)."""
    with open_context() as ctx:
        wallets = ctx.keystore.list()
        if as_json:
            print_json([{"name": w.name, "address": w.address} for w in wallets])
            return
        console.print(table("Wallets", ["name", "address"], [(w.name, w.address) for w in wallets]))


@app.command()
def show(
    account: str = typer.Argument(..., help="Wallet name, address or dev0..dev9."), as_json: bool = JSON_OPTION
) -> None:
    """Show a wallet's address and key file (never the key)."""
    with open_context() as ctx:
        wallet = ctx.keystore.find(account)
        data = {"name": wallet.name, "address": wallet.address, "keyfile": str(wallet.path) if wallet.path else None}
        if as_json:
            print_json(data)
        else:
            console.print(table("Wallet", ["", "value"], list(data.items())))


@app.command()
def balance(
    account: str = typer.Argument(..., help="Wallet name, address or dev0..dev9."), as_json: bool = JSON_OPTION
) -> None:
    """Show ETH (gas), COV and USD balances of an account."""
    with open_context() as ctx:
        address = _resolve(ctx, account)
        suite = ctx.deployment
        cov = suite.contract(ctx.chain, "CoveyToken")
        usd = suite.contract(ctx.chain, "USDToken")
        data: dict[str, Any] = {
            "address": address,
            "eth_wei": ctx.chain.balance(address),
            "cov_units": int(cov.functions.balanceOf(address).call()),
            "usd_units": int(usd.functions.balanceOf(address).call()),
        }
        if as_json:
            print_json(data)
            return
        rows = [
            ("ETH", format_units(data["eth_wei"], 18)),
            ("COV", format_units(data["cov_units"], COV_DECIMALS)),
            ("USD", format_units(data["usd_units"], USD_DECIMALS)),
        ]
        console.print(table(f"Balances of {address}", ["asset", "balance"], rows))


@app.command()
def faucet(
    account: str = typer.Argument(..., help="Address (or wallet name) to fund."), as_json: bool = JSON_OPTION
) -> None:
    """Fund an address with ETH for gas, USD and COV (local chains only)."""
    with open_context() as ctx:
        address = _resolve(ctx, account)
        funded = fund(ctx.chain, ctx.deployment, address)
        if as_json:
            print_json({"address": address, **funded})
            return
        console.print(
            f"funded {address}: {format_units(FAUCET_AMOUNTS['eth_wei'], 18)} ETH, "
            f"{format_units(FAUCET_AMOUNTS['usd_units'], USD_DECIMALS)} USD, "
            f"{format_units(FAUCET_AMOUNTS['cov_units'], COV_DECIMALS)} COV"
        )


def _resolve(ctx: Context, account: str) -> str:
    """An address from a raw address or a wallet name."""
    if account.startswith("0x"):
        return parse_address(account)
    return ctx.keystore.find(account).address
