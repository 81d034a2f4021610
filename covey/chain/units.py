"""Units of the protocol's money: COV (18 decimals), USD (6), ETH for gas (18), and how people read and type them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from covey.errors import ValidationError

COV_DECIMALS = 18
USD_DECIMALS = 6
ETH_DECIMALS = 18

COV = 10**COV_DECIMALS
"""Token units (wei) in one COV."""
USD = 10**USD_DECIMALS
"""Atomic units in one USD (the local USDToken's and USDC's 6 decimals)."""
ETH = 10**ETH_DECIMALS
"""Wei in one ether, the gas money."""
GWEI = 10**9
"""Wei in one gwei, the unit gas fees are quoted in."""


def parse_amount(text: str, decimals: int = COV_DECIMALS, *, what: str = "amount") -> int:
    """Token units from a decimal string ("12.5" COV -> 12.5e18); zero or negative is an error."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise ValidationError(f"malformed {what} {text!r}: expected a decimal number") from exc
    if not value.is_finite() or value <= 0:
        raise ValidationError(f"{what} must be a positive number, got {text!r}")
    units = value * (Decimal(10) ** decimals)
    if units != units.to_integral_value():
        raise ValidationError(f"{what} {text!r} has more than {decimals} decimals")
    return int(units)


def format_units(units: int, decimals: int = COV_DECIMALS, places: int = 4) -> str:
    """Token units as a human decimal string, e.g. 1500000000000000000 -> '1.5'."""
    value = Decimal(units) / (Decimal(10) ** decimals)
    text = f"{value:,.{places}f}".rstrip("0").rstrip(".")
    return text or "0"
