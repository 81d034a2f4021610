"""Demo actors (named dev accounts) and a snapshot of their money: liquid COV and USD, stake, unbonding, rewards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from rich.table import Table

from covey.chain import Chain, dev_accounts
from covey.chain.deploy import Deployment
from covey.chain.roles import Role
from covey.chain.units import format_units

ACTOR_NAMES = ["owner", "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "referee"]


def actors() -> dict[str, LocalAccount]:
    """The ten dev accounts under story names (owner = dev0 deploys and funds)."""
    return dict(zip(ACTOR_NAMES, dev_accounts(len(ACTOR_NAMES)), strict=True))


@dataclass(frozen=True)
class Holdings:
    """One account's COV position at one moment (token units)."""

    liquid: int
    staked: int
    delegated: int
    unbonding: int
    usd: int

    @property
    def total(self) -> int:
        return self.liquid + self.staked + self.delegated + self.unbonding


def holdings(chain: Chain, deployment: Deployment, address: str, operators: Sequence[str]) -> Holdings:
    """Read an account's liquid COV, own stake, delegations (to `operators`) and unbonding value."""
    cov = deployment.contract(chain, "CoveyToken")
    usd = deployment.contract(chain, "USDToken")
    staking = deployment.contract(chain, "Staking")
    staked = sum(int(staking.functions.stakeOf(address, role).call()) for role in Role)
    delegated = sum(
        int(staking.functions.delegationOf(address, operator, role).call())
        for operator in operators
        if operator != address
        for role in Role
    )
    unbonding = sum(int(entry[3]) for entry in staking.functions.pendingUnbonds(address).call())
    return Holdings(
        liquid=int(cov.functions.balanceOf(address).call()),
        staked=staked,
        delegated=delegated,
        unbonding=unbonding,
        usd=int(usd.functions.balanceOf(address).call()),
    )


def holdings_table(title: str, before: dict[str, Holdings], after: dict[str, Holdings]) -> Table:
    """Before/after COV per account, with the change in total COV position."""
    table = Table(title=title, title_justify="left")
    for column in (
        "account",
        "liquid COV",
        "staked",
        "delegated",
        "unbonding",
        "total before",
        "total after",
        "change",
    ):
        table.add_column(column, justify="left" if column == "account" else "right")
    for name, now in after.items():
        then = before[name]
        change = now.total - then.total
        sign = "+" if change > 0 else ""
        table.add_row(
            name,
            format_units(now.liquid, places=2),
            format_units(now.staked, places=2),
            format_units(now.delegated, places=2),
            format_units(now.unbonding, places=2),
            format_units(then.total, places=2),
            format_units(now.total, places=2),
            f"{sign}{format_units(change, places=2)}" if change else "0",
        )
    return table


def holdings_json(snapshot: dict[str, Holdings]) -> dict[str, dict[str, int]]:
    """Holdings as plain numbers for `--json` summaries."""
    return {name: {**vars(h), "total": h.total} for name, h in snapshot.items()}
