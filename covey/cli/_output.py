"""How commands talk to people: rich tables on a terminal, the same data as JSON with `--json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Console
from rich.table import Table

from covey.errors import ValidationError

console = Console()
error_console = Console(stderr=True, soft_wrap=True)

COV_DECIMALS = 18
USD_DECIMALS = 6


def print_json(data: Any) -> None:
    """Print `data` as JSON on stdout (no colours, so it pipes cleanly)."""
    print(json.dumps(data, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table with the given header and rows, numbers right-aligned."""
    result = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(row[index], int | float | Decimal) for row in rows)
        result.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result


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
