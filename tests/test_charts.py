"""The inline SVG charts: well-formed, every number readable, nothing unescaped."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from flask_keyauth import charts

SVG = "{http://www.w3.org/2000/svg}"
START = dt.date(2026, 11, 1)


def series(*counts: int, start: dt.date = START) -> list[tuple[dt.date, int]]:
    return [(start + dt.timedelta(days=i), n) for i, n in enumerate(counts)]


def parse(markup: Markup) -> ET.Element:
    assert isinstance(markup, Markup)
    return ET.fromstring(str(markup))  # noqa: S314 - our own output


def bar_heights(root: ET.Element) -> dict[str, float]:
    """Date -> drawn height of its bar (0 when no bar is drawn)."""
    heights = {}
    for group in root.iter(f"{SVG}g"):
        title = group.findtext(f"{SVG}title") or ""
        fill = group.find(f"{SVG}rect[@class='ka-bar-fill']")
        heights[title.split(":")[0]] = float(fill.get("height", 0)) if fill is not None else 0.0
    return heights


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (4, [0, 1, 2, 3, 4]),
        (5, [0, 2, 4, 6]),
        (37, [0, 10, 20, 30, 40]),
        (100, [0, 50, 100]),
        (999, [0, 500, 1000]),
        (12345, [0, 5000, 10000, 15000]),
    ],
)
def test_nice_ticks(peak: int, ticks: list[int]) -> None:
    assert charts.nice_ticks(peak) == ticks


def test_nice_ticks_always_cover_the_peak_with_few_whole_steps() -> None:
    for peak in range(0, 5000, 7):
        ticks = charts.nice_ticks(peak)
        assert ticks[0] == 0 and ticks[-1] >= peak
        assert 2 <= len(ticks) <= 6
        steps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(steps) == 1 and all(isinstance(t, int) for t in ticks)


def test_summary_names_total_and_busiest_day() -> None:
    assert charts.summary(series(0, 4, 1)) == (
        "5 requests in the last 3 days; busiest day 2026-11-02 with 4 requests."
    )
    assert charts.summary(series(0, 0)) == "No requests in the last 2 days."
    assert charts.summary(series(1)) == "1 request today; busiest day 2026-11-01 with 1 request."
    assert charts.summary([]) == "No usage data."
    # Ties go to the latest day; thousands are grouped.
    assert charts.summary(series(2000, 2000)).endswith("2026-11-02 with 2,000 requests.")


def test_sparkline_title_and_desc_give_the_numbers() -> None:
    root = parse(charts.sparkline(series(0, 3, 1, 0, 6)))
    assert root.get("role") == "img"
    title = root.findtext(f"{SVG}title")
    assert title == "10 requests in the last 5 days; busiest day 2026-11-05 with 6 requests."
    assert root.get("aria-label") == title
    assert root.findtext(f"{SVG}desc") == (
        "2026-11-01: 0, 2026-11-02: 3, 2026-11-03: 1, 2026-11-04: 0, 2026-11-05: 6"
    )


def test_sparkline_points_follow_the_counts() -> None:
    root = parse(charts.sparkline(series(0, 5, 10), width=100, height=28))
    line = root.find(f"{SVG}polyline")
    assert line is not None
    points = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
    xs, ys = zip(*points, strict=True)
    assert xs == (3.0, 50.0, 97.0)
    # Higher counts are drawn higher (smaller y), the peak at the top padding.
    assert ys == (25.0, 14.0, 3.0)
    dot = root.find(f"{SVG}circle")
    assert dot is not None and (dot.get("cx"), dot.get("cy")) == ("97", "3")


def test_sparkline_of_no_requests_is_a_flat_muted_line() -> None:
    root = parse(charts.sparkline(series(0, 0, 0)))
    line = root.find(f"{SVG}polyline")
    assert line is not None and line.get("stroke") == charts.MUTED
    assert {p.split(",")[1] for p in (line.get("points") or "").split()} == {"25"}
    assert root.find(f"{SVG}polygon") is None
    assert parse(charts.sparkline([])).find(f"{SVG}polyline") is None


def test_bar_chart_has_a_titled_bar_per_day_scaled_to_the_axis() -> None:
    data = series(*([0] * 27), 5, 40, 20)
    root = parse(charts.bar_chart(data))
    titles = [g.findtext(f"{SVG}title") for g in root.iter(f"{SVG}g")]
    assert len(titles) == 30
    assert titles[0] == "2026-11-01: 0 requests"
    assert titles[-3:] == [
        "2026-11-28: 5 requests",
        "2026-11-29: 40 requests",
        "2026-11-30: 20 requests",
    ]
    heights = bar_heights(root)
    assert heights["2026-11-01"] == 0
    # The axis tops out at 40 here: the 40 bar spans the plot, 20 half of it.
    assert heights["2026-11-29"] == 2 * heights["2026-11-30"] == 8 * heights["2026-11-28"]
    plot_h = 240 - 10 - 26
    assert heights["2026-11-29"] == plot_h


def test_bar_chart_axis_labels() -> None:
    data = series(*range(30))
    root = parse(charts.bar_chart(data))
    labels = [(t.get("text-anchor"), t.text) for t in root.iter(f"{SVG}text")]
    counts = [text for anchor, text in labels if anchor == "end"]
    dates = [text for anchor, text in labels if anchor == "middle"]
    assert counts == ["0", "10", "20", "30"]
    # Every 7th day back from the last, which is always labelled.
    assert dates == ["Nov 2", "Nov 9", "Nov 16", "Nov 23", "Nov 30"]
    for text in root.iter(f"{SVG}text"):
        assert float(text.get("font-size") or 0) >= 12
    assert [t.text for t in parse(charts.bar_chart(data, label_every=10)).iter(f"{SVG}text")][
        -3:
    ] == ["Nov 10", "Nov 20", "Nov 30"]
    big = parse(charts.bar_chart(series(0, 12000)))
    assert "15,000" in [t.text for t in big.iter(f"{SVG}text")]


def test_bar_chart_of_no_requests_says_so() -> None:
    root = parse(charts.bar_chart(series(0, 0, 0)))
    assert root.findtext(f"{SVG}title") == "No requests in the last 3 days."
    assert "No requests yet" in [t.text for t in root.iter(f"{SVG}text")]
    assert root.find(f".//{SVG}rect[@class='ka-bar-fill']") is None
    assert "No requests yet" not in str(charts.bar_chart(series(0, 1)))


def test_charts_stay_inside_their_view_box() -> None:
    data = series(*[(i * 7919) % 500 for i in range(90)])
    for markup, width, height in [
        (charts.bar_chart(data), 960, 240),
        (charts.bar_chart(data, width=360, height=200), 360, 200),
        (charts.sparkline(data), 100, 28),
    ]:
        text = str(markup)
        for name, value in re.findall(r'\b(x|y|cx|cy|x1|x2|y1|y2)="(-?[\d.]+)"', text):
            limit = width if name.startswith(("x", "cx")) else height
            assert 0 <= float(value) <= limit, (name, value)


def test_chart_markup_escapes_what_it_is_given() -> None:
    class Sneaky(dt.date):
        def isoformat(self) -> str:
            return '<script>alert("x")</script>'

    data = [(Sneaky(2026, 11, 1), 3)]
    for markup in (charts.sparkline(data), charts.bar_chart(data)):
        assert "<script>" not in markup
        assert "&lt;script&gt;" in markup
        parse(markup)  # still well-formed
