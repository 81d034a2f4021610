"""How commands talk to people: rich tables on a terminal, the same data as JSON with `--json`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from covey.chain.units import COV_DECIMALS, USD_DECIMALS, format_units, parse_amount

console = Console()
error_console = Console(stderr=True, soft_wrap=True)

# Units moved to covey.chain.units; the commands keep importing them from here.
__all__ = [
    "COV_DECIMALS",
    "USD_DECIMALS",
    "console",
    "error_console",
    "format_units",
    "parse_amount",
    "print_json",
    "table",
]


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
