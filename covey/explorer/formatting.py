"""How figures read on the pages: token amounts, scores, times and addresses (Jinja filters)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup, escape

from covey.chain.roles import Role

COV_DECIMALS = 18
USD_DECIMALS = 6
SCORE_DECIMALS = 6


def units(value: Any, decimals: int, places: int = 2, small_places: int = 6) -> str:
    """A token amount in whole units: 1,234.5 -> "1,234.50"; below 1 up to 6 decimals (0.0123), then "< 0.000001".

    Dust (a wei of rounding) reads as noise at 18 decimals; pages keep the exact integer in `data-value`.
    """
    if value is None:
        return "-"
    amount = Decimal(int(value)) / (Decimal(10) ** decimals)
    if amount == amount.to_integral_value():
        return f"{int(amount):,}"
    if abs(amount) >= 1:
        return f"{amount:,.{places}f}"
    rounded = round(amount, small_places)
    if rounded == 0:
        floor = Decimal(1).scaleb(-small_places)
        return f"< {floor:f}" if amount > 0 else f"> -{floor:f}"
    return f"{rounded.normalize():f}"


def cov(value: Any) -> str:
    return units(value, COV_DECIMALS)


def usd(value: Any) -> str:
    return units(value, USD_DECIMALS)


def score(value: Any) -> str:
    """A 6-decimal fixed-point score as a decimal with 4 places (accuracy 0.9722)."""
    if value is None:
        return "-"
    return f"{Decimal(int(value)) / (Decimal(10) ** SCORE_DECIMALS):.4f}"


def number(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def timestamp(value: Any) -> str:
    """Unix seconds as UTC date and time."""
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(int(value), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: Any) -> str:
    """Seconds as "2d 3h", "45m", "12s"."""
    if seconds is None:
        return "-"
    left = abs(int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


@pass_context
def relative(context: Context, when: Any) -> str:
    """A chain time relative to the head block's time: "in 2h 5m" or "3m ago"."""
    now = context.get("now")
    if when is None or now is None:
        return "-"
    delta = int(when) - int(now)
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


def short(value: Any, head: int = 6, tail: int = 4) -> str:
    """0x1234…abcd."""
    text = str(value)
    if len(text) <= head + tail + 1:
        return text
    return f"{text[:head]}…{text[-tail:]}" if tail else f"{text[:head]}…"


@pass_context
def address(context: Context, value: Any) -> Markup:
    """A link to the account page, labelled with the suite contract's name when it is one."""
    if value is None or str(value) == "":
        return Markup("-")
    text = str(value)
    names: dict[str, str] = context.get("names") or {}
    label = names.get(text) or short(text)
    css = "addr contract" if text in names else "addr"
    return Markup(f'<a class="{css}" href="/accounts/{escape(text)}" title="{escape(text)}">{escape(label)}</a>')


def tx_link(value: Any) -> Markup:
    text = str(value)
    return Markup(f'<a class="hash" href="/tx/{escape(text)}" title="{escape(text)}">{escape(short(text, 10, 6))}</a>')


def bps(value: Any) -> str:
    return "-" if value is None else f"{int(value) / 100:.2f}%"


FILTERS = {
    "cov": cov,
    "usd": usd,
    "score": score,
    "number": number,
    "timestamp": timestamp,
    "duration": duration,
    "relative": relative,
    "short": short,
    "address": address,
    "tx": tx_link,
    "bps": bps,
}


# Which token an event argument counts in: USD contracts count USD, except where they hold COV stake.
USD_CONTRACTS = frozenset({"USDToken", "PaymentBatcher"})
USD_KEYS = {
    "Market": frozenset(
        {"pricePerUnitSecond", "maxPricePerUnitSecond", "escrow", "refund", "refunded", "paid", "topUp"}
    ),
    "HostRegistry": frozenset({"amount", "subsidy", "pricePer1kTokens"}),
}
AMOUNT_WORDS = (
    "amount", "pool", "stake", "escrow", "paid", "refund", "reward", "slashed", "requested", "value",
    "penalty", "price", "recovered", "supply", "weight", "minted", "topup", "subsidy", "shares", "commission",
)  # fmt: skip
COUNT_SUFFIXES = ("Units", "Count", "count", "bps", "Bps")  # paidUnits, subsidy_bps: counts and rates, not money
TIME_KEYS = ("timestamp", "at")
TIME_SUFFIXES = ("Deadline", "_at", "End")


def money_kind(contract: str, key: str) -> str | None:
    """ "usd", "cov" or None: the token an argument `key` of an event of `contract` is an amount of."""
    if key.endswith(COUNT_SUFFIXES) or not any(word in key.lower() for word in AMOUNT_WORDS):
        return None
    if contract in USD_CONTRACTS or key in USD_KEYS.get(contract, frozenset()):
        return "usd"
    return "cov"


def _is_time(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(TIME_SUFFIXES)


@pass_context
def event_args(context: Context, event: Any) -> Markup:
    """An event's arguments on one line: addresses linked, token amounts in whole units, hashes shortened."""
    parts: list[Markup] = []
    names: dict[str, str] = context.get("names") or {}
    # Treasury payments and allowances name their token: a USD one counts in USD.
    in_usd = names.get(str(event.args.get("token", ""))) == "USDToken"
    for key, value in event.args.items():
        kind = money_kind(event.contract, key) if isinstance(value, int) and not isinstance(value, bool) else None
        if kind is not None and in_usd:
            kind = "usd"
        if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
            shown = address(context, value)
        elif isinstance(value, str) and value.startswith("0x") and len(value) > 20:
            shown = Markup('<span class="hash" title="{0}">{1}</span>').format(value, short(value, 10, 6))
        elif key == "role" and isinstance(value, int):
            shown = Markup(escape(_role_label(value)))
        elif isinstance(value, bool):
            shown = Markup(escape("yes" if value else "no"))
        elif kind is not None:
            shown = Markup(escape(usd(value) if kind == "usd" else cov(value)))
        elif isinstance(value, int) and _is_time(key) and value > 10**8:
            shown = Markup(escape(timestamp(value).removesuffix(" UTC")))
        elif isinstance(value, list):
            items = ", ".join(short(item) if isinstance(item, str) else str(item) for item in value[:8])
            shown = Markup(escape(f"[{items}{', …' if len(value) > 8 else ''}]"))
        else:
            shown = Markup(escape(str(value)))
        parts.append(Markup('<span class="arg"><span class="k">{0}</span> {1}</span>').format(key, shown))
    return Markup(" ").join(parts)


def _role_label(value: int) -> str:
    try:
        return Role(value).name.lower()
    except ValueError:
        return str(value)


FILTERS["args"] = event_args
