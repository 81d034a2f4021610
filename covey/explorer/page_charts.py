"""The charts each page shows, built from its read model with the generic SVG charts in `charts.py`."""

from __future__ import annotations

from covey.explorer import alliance_view, arena_view, compute_view, gateway_view
from covey.explorer.charts import Bar, Series, bar_chart, line_chart
from covey.explorer.formatting import COV_DECIMALS, USD_DECIMALS
from covey.explorer.queries import Overview

GOOD, BAD, NEUTRAL, MUTED = "#059669", "#dc2626", "#2563eb", "#94a3b8"


def _cov(value: int) -> float:
    return value / 10**COV_DECIMALS


def _usd(value: int) -> float:
    return value / 10**USD_DECIMALS


def staked_by_role(overview: Overview) -> str:
    bars = [Bar(role, _cov(amount)) for role, amount in overview.figures.staked.items()]
    return bar_chart(bars, title="COV staked per role", y_label="COV")


def activity(overview: Overview) -> str:
    bars = [
        Bar(
            f"{b.first_block}",
            b.count,
            NEUTRAL,
            href=f"/events?block={b.first_block}" if b.first_block == b.last_block else None,
            note=f"blocks {b.first_block}-{b.last_block}",
        )
        for b in overview.activity
    ]
    return bar_chart(bars, title="Events per block range", y_label="events", show_values=False)


def leaderboard(task: arena_view.Task) -> str:
    """Consensus score per ranked submission, with the baseline as a dashed line."""
    bars = []
    for submission in task.leaderboard:
        if submission.consensus is None:
            continue
        color = GOOD if submission.payout else (BAD if submission.slashed else MUTED)
        label = f"#{submission.rank} {submission.trainer[:8]}"
        bars.append(Bar(label, submission.consensus / arena_view.SCORE_SCALE, color, note=submission.trainer))
    baseline = int(task.created["baselineScore"]) / arena_view.SCORE_SCALE
    return bar_chart(
        bars,
        title="Consensus score per submission (green paid, red slashed)",
        y_label="score",
        reference=(baseline, f"baseline {baseline:.2f}"),
        y_format=lambda v: f"{v:.3f}",
    )


def validator_deviation(task: arena_view.Task) -> str:
    """Each revealed validator's mean deviation from consensus against the tolerance."""
    tolerance = int(task.created["tolerance"]) / arena_view.SCORE_SCALE
    bars = [
        Bar(
            row.validator[:8],
            row.mean_deviation / arena_view.SCORE_SCALE,
            BAD if row.slashed else GOOD,
            href=f"/accounts/{row.validator}",
            note=row.validator,
        )
        for row in task.validators
        if row.mean_deviation is not None
    ]
    return bar_chart(
        bars,
        title="Validators' mean deviation from consensus",
        y_label="deviation",
        reference=(tolerance, f"tolerance {tolerance:.2f}"),
        y_format=lambda v: f"{v:.3f}",
    )


def alliance_accuracy(run: alliance_view.Run) -> str:
    points = [(float(number), value) for number, value in sorted(run.accuracy.items())]
    return line_chart(
        [Series("accuracy", points, GOOD)],
        title="Global model accuracy after each round (0 = initial model)",
        x_label="round",
        y_label="accuracy",
        y_format=lambda v: f"{v:.0%}" if v == round(v, 2) else f"{v:.1%}",
    )


def alliance_updates(run: alliance_view.Run) -> str:
    accepted = [(float(r.number), float(r.accepted)) for r in run.rounds if r.updates]
    rejected = [(float(r.number), float(r.rejected)) for r in run.rounds if r.updates]
    return line_chart(
        [Series("accepted", accepted, GOOD), Series("rejected", rejected, BAD)],
        title="Updates accepted and rejected per round",
        x_label="round",
        y_label="updates",
        integer_y=True,
    )


def market_bids(job: compute_view.Job) -> str:
    winner = job.provider
    bars = [
        Bar(
            str(bid["provider"])[:8],
            int(bid["pricePerUnitSecond"]),  # micro-USD: the demo's prices are a few millionths of a dollar
            GOOD if bid["provider"] == winner else NEUTRAL,
            href=f"/accounts/{bid['provider']}",
        )
        for bid in job.bids
    ]
    ceiling = int(job.posted["maxPricePerUnitSecond"])
    return bar_chart(
        bars,
        title="Bids: micro-USD per unit-second (green won)",
        y_label="µUSD",
        reference=(ceiling, "buyer's maximum"),
    )


def gateway_revenue(gateway: gateway_view.Gateway) -> str:
    bars = []
    for model in gateway.models:
        bars.append(Bar(model.model_id, _usd(model.revenue), NEUTRAL, note="paid by agents"))
    return bar_chart(bars, title="Revenue per model (USD paid by agents)", y_label="USD")
