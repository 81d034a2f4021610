"""What a request costs: the host's per-token price for `max_tokens`, less the Treasury's subsidy.

All amounts are atomic units of the 6-decimal USD token. The agent pays `price`; the HostRegistry pays the
host that, and the Treasury adds `subsidy_for(price)`, which is the same integer formula the contract uses,
so the host earns its full cost (to within a unit of rounding) while the agent pays `1 - subsidy` of it.
"""

from __future__ import annotations

from dataclasses import dataclass

BPS = 10_000
MAX_SUBSIDY_BPS = 9_000  # the HostRegistry's own ceiling: an agent always pays something
USD_DECIMALS = 6


@dataclass(frozen=True)
class Quote:
    """The price of one request, and how the host's cost splits between agent and Treasury."""

    max_tokens: int
    host_price_per_1k_atomic: int
    host_cost_atomic: int
    subsidy_bps: int
    price_atomic: int
    """What the agent pays (at least 1: x402 has no free payments)."""
    subsidy_atomic: int
    """What the Treasury adds for the host on top of `price_atomic`."""


def host_cost(price_per_1k_atomic: int, max_tokens: int) -> int:
    """The host's cost of up to `max_tokens` tokens at `price_per_1k_atomic` per thousand, rounded up."""
    return -(-price_per_1k_atomic * max_tokens // 1000)


def subsidy_for(paid_atomic: int, subsidy_bps: int) -> int:
    """The Treasury's top-up for a payment of `paid_atomic` at `subsidy_bps` (HostRegistry's formula)."""
    _check_rate(subsidy_bps)
    return paid_atomic * subsidy_bps // (BPS - subsidy_bps)


def quote(price_per_1k_atomic: int, max_tokens: int, subsidy_bps: int) -> Quote:
    """Price a request: per-token host cost x `max_tokens` x (1 - subsidy), rounded up, never below 1."""
    _check_rate(subsidy_bps)
    if price_per_1k_atomic < 0 or max_tokens < 1:
        raise ValueError(f"cannot price {max_tokens} tokens at {price_per_1k_atomic} per thousand")
    cost = host_cost(price_per_1k_atomic, max_tokens)
    price = max(1, -(-cost * (BPS - subsidy_bps) // BPS))
    return Quote(
        max_tokens=max_tokens,
        host_price_per_1k_atomic=price_per_1k_atomic,
        host_cost_atomic=cost,
        subsidy_bps=subsidy_bps,
        price_atomic=price,
        subsidy_atomic=subsidy_for(price, subsidy_bps),
    )


def usd(atomic: int) -> float:
    """Atomic units as USD, for people and JSON (never for arithmetic on money)."""
    return atomic / 10**USD_DECIMALS


def _check_rate(subsidy_bps: int) -> None:
    if not 0 <= subsidy_bps <= MAX_SUBSIDY_BPS:
        raise ValueError(f"a subsidy rate is 0..{MAX_SUBSIDY_BPS} bps, not {subsidy_bps}")
