"""Charts drawn on the server as SVG text: a line chart and a bar chart, readable without JavaScript.

Each returns one `<svg>` element with a `viewBox` (so CSS can scale it), a `<title>` and `<desc>` for
screen readers, and a `<title>` per point or bar (the browser shows it on hover). Labels are escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2")
AXIS = "#94a3b8"
GRID = "#e2e8f0"
TEXT = "#334155"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 48, 44
LEGEND_Y = 32  # the legend sits on its own row under the title, where no line or bar can cover it


@dataclass(frozen=True)
class Series:
    """A named line: (x, y) points in x order."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None


@dataclass(frozen=True)
class Bar:
    """One bar: its label under the axis, its value, and optionally a colour, a link and a hover note."""

    label: str
    value: float
    color: str | None = None
    href: str | None = None
    note: str = ""


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^n, at least 1 for counts) covering [low, high]."""
    if high < low:
        low, high = high, low
    if math.isclose(high, low):
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw_step = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    if integer:
        step = max(1.0, float(round(step)))
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1 else f"{value:.4g}"


def _frame(width: int, height: int, title: str, desc: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}" '
        'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
        f'<text x="{MARGIN_LEFT}" y="16" font-size="13" font-weight="600" fill="{TEXT}">{escape(title)}</text>',
    ]


def _legend(parts: list[str], items: Sequence[tuple[str, str, bool]]) -> None:
    """Legend entries (colour, label, dashed) in a row from the left edge of the plot."""
    x = MARGIN_LEFT
    for color, label, dashed in items:
        if dashed:
            parts.append(
                f'<line x1="{x}" x2="{x + 16}" y1="{LEGEND_Y - 4}" y2="{LEGEND_Y - 4}" stroke="{color}" '
                'stroke-width="2" stroke-dasharray="4 3"/>'
            )
        else:
            parts.append(f'<rect x="{x + 3}" y="{LEGEND_Y - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 20}" y="{LEGEND_Y}" fill="{TEXT}">{escape(label)}</text>')
        x += 32 + 7 * len(label)


def _y_axis(
    parts: list[str],
    ticks: list[float],
    scale_y: Callable[[float], float],
    width: int,
    label: str,
    fmt: Callable[[float], str],
) -> None:
    for tick in ticks:
        y = scale_y(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}">{escape(fmt(tick))}</text>'
        )
    if label:
        parts.append(
            f'<text transform="translate(14 {MARGIN_TOP + 60}) rotate(-90)" text-anchor="end" '
            f'fill="{TEXT}">{escape(label)}</text>'
        )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    width: int = 640,
    height: int = 260,
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = _fmt,
    integer_y: bool = False,
) -> str:
    """Lines with dots, a y grid with round ticks, integer x ticks (rounds, blocks) and a legend."""
    points = [p for s in series for p in s.points]
    desc = "; ".join(f"{s.name}: " + ", ".join(f"{_fmt(x)} -> {y_format(y)}" for x, y in s.points) for s in series)
    parts = _frame(width, height, title, desc or "no data")
    if not points:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{AXIS}">no data yet</text>')
        return "".join([*parts, "</svg>"])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y_ticks = nice_ticks(*(y_range or (min(ys), max(ys))), integer=integer_y)
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_h

    _y_axis(parts, y_ticks, sy, width, y_label, y_format)
    distinct_x = sorted(set(xs))
    stride = max(1, math.ceil(len(distinct_x) / 12))
    for x in distinct_x[::stride]:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{height - MARGIN_BOTTOM + 16}" text-anchor="middle" fill="{TEXT}">'
            f"{escape(_fmt(x))}</text>"
        )
    base = height - MARGIN_BOTTOM
    parts.append(f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{base}" y2="{base}" stroke="{AXIS}"/>')
    if x_label:
        parts.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{height - 8}" text-anchor="middle" fill="{TEXT}">'
            f"{escape(x_label)}</text>"
        )
    for number, line in enumerate(series):
        color = line.color or PALETTE[number % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line.points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in line.points:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(line.name)}: {escape(_fmt(x))} -> {escape(y_format(y))}</title></circle>"
            )
    _legend(parts, [(line.color or PALETTE[n % len(PALETTE)], line.name, False) for n, line in enumerate(series)])
    return "".join([*parts, "</svg>"])


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    y_label: str = "",
    width: int = 640,
    height: int = 240,
    reference: tuple[float, str] | None = None,
    y_format: Callable[[float], str] = _fmt,
    show_values: bool | None = None,
) -> str:
    """Vertical bars from zero with round y ticks, optional links, and an optional dashed reference line."""
    desc = "; ".join(f"{b.label}: {y_format(b.value)}" for b in bars)
    parts = _frame(width, height, title, desc or "no data")
    if not bars:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{AXIS}">no data yet</text>')
        return "".join([*parts, "</svg>"])
    values = [b.value for b in bars] + ([reference[0]] if reference else [])
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h - (y - ticks[0]) / (ticks[-1] - ticks[0]) * plot_h

    _y_axis(parts, ticks, sy, width, y_label, y_format)
    slot = plot_w / len(bars)
    bar_w = max(1.0, slot * 0.7)
    label_every = max(1, math.ceil(len(bars) / 16))
    values_shown = len(bars) <= 16 if show_values is None else show_values
    zero = sy(0.0)
    for index, bar in enumerate(bars):
        x = MARGIN_LEFT + index * slot + (slot - bar_w) / 2
        top = sy(max(bar.value, 0.0))
        bar_h = max(0.5, abs(sy(bar.value) - zero))
        color = bar.color or PALETTE[0]
        note = f" ({bar.note})" if bar.note else ""
        rect = (
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{bar_h:.1f}" fill="{color}" rx="2">'
            f"<title>{escape(bar.label)}: {escape(y_format(bar.value))}{escape(note)}</title></rect>"
        )
        parts.append(f'<a href="{escape(bar.href)}">{rect}</a>' if bar.href else rect)
        center = x + bar_w / 2
        if values_shown:
            parts.append(
                f'<text x="{center:.1f}" y="{top - 4:.1f}" text-anchor="middle" fill="{TEXT}">'
                f"{escape(y_format(bar.value))}</text>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{center:.1f}" y="{height - MARGIN_BOTTOM + 16}" text-anchor="middle" fill="{TEXT}">'
                f"{escape(bar.label[:18])}</text>"
            )
    base = height - MARGIN_BOTTOM
    parts.append(f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{base}" y2="{base}" stroke="{AXIS}"/>')
    if reference is not None:
        y = sy(reference[0])
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dc2626" '
            'stroke-dasharray="5 4"/>'
        )
        _legend(parts, [("#dc2626", reference[1], True)])
    return "".join([*parts, "</svg>"])
