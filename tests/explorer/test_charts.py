"""Server-side SVG charts: well-formed, escaped, with every point and bar a person can hover."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from covey.explorer import Bar, Series, bar_chart, line_chart
from covey.explorer.charts import nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def test_ticks_are_round_and_cover_the_range() -> None:
    ticks = nice_ticks(0.6021, 0.9734)
    assert ticks[0] <= 0.6021 and ticks[-1] >= 0.9734
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (0.05, 0.1)
    assert nice_ticks(0, 1, integer=True) == [0, 1]
    assert nice_ticks(5, 5)[0] < 5 < nice_ticks(5, 5)[-1]  # a flat line still gets an axis


def test_line_chart_draws_every_point_and_escapes_labels() -> None:
    series = [
        Series("accuracy <script>", [(0, 0.60), (1, 0.92), (2, 0.938), (3, 0.973)]),
        Series("baseline", [(0, 0.5), (3, 0.5)]),
    ]
    svg = line_chart(series, title="Accuracy & rounds", x_label="round", y_label="accuracy")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    assert len(root.findall(f".//{SVG}circle")) == 6
    assert len(root.findall(f".//{SVG}polyline")) == 2
    assert root.find(f"{SVG}title").text == "Accuracy & rounds"
    assert "<script>" not in svg and "accuracy &lt;script&gt;" in svg
    assert "0.973" in root.find(f"{SVG}desc").text  # the numbers, for screen readers


def test_bar_chart_links_bars_and_draws_the_reference_line() -> None:
    bars = [Bar("ada", 0.975, href="/accounts/0xabc"), Bar("junk", 0.1, "#dc2626", note="slashed")]
    svg = bar_chart(bars, title="Leaderboard", reference=(0.9, "baseline 0.90"))
    root = ET.fromstring(svg)
    links = root.findall(f".//{SVG}a")
    assert [link.get("href") for link in links] == ["/accounts/0xabc"]
    assert len(root.findall(f".//{SVG}rect")) >= 2
    assert any(line.get("stroke-dasharray") for line in root.findall(f".//{SVG}line"))
    assert "junk: 0.1 (slashed)" in svg


def test_empty_charts_say_so() -> None:
    for svg in (bar_chart([], title="nothing"), line_chart([], title="nothing")):
        assert "no data yet" in svg
        ET.fromstring(svg)
