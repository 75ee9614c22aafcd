"""Inline SVG charts of per-day request counts, drawn on the server.

The key pages show usage without any JavaScript or chart library: these
functions turn ``[(date, count), ...]`` (what ``KeyService.daily_usage``
returns) into SVG markup. Every number is also in a ``<title>``, so it shows
as a tooltip and screen readers read it. This module has no Flask import on
purpose; its output is :class:`markupsafe.Markup` with every piece of text
escaped, so templates insert it as is.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

Series = Sequence[tuple[dt.date, int]]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: Colours as SVG presentation attributes: a stylesheet may override them
#: (they have the lowest precedence), and no ``style`` attribute is needed,
#: so the charts work under a strict Content-Security-Policy. These are the
#: light scheme's, for a page without the bundled sheet; ``keyauth.css``
#: sets both schemes' through the classes (``ka-bar-fill``, ``ka-axis``, …).
ACCENT = "#4f46e5"
ACCENT_SOFT = "#e0e7ff"
MUTED = "#94a3b8"
GRID = "#e2e8f0"
LABEL = "#64748b"


def short_date(day: dt.date) -> str:
    """``Nov 3`` (the key pages pass their locale's form in :class:`ChartText`)."""
    return f"{MONTHS[day.month - 1]} {day.day}"


def requests_text(count: int) -> str:
    return f"{count:,} request" + ("" if count == 1 else "s")


def nice_ticks(peak: int, target: int = 4) -> list[int]:
    """Whole-number axis ticks from 0 to at least ``peak``, on a 1-2-5 step.

    >>> nice_ticks(37)
    [0, 10, 20, 30, 40]
    >>> nice_ticks(0)
    [0, 1]
    """
    if peak <= 0:
        return [0, 1]
    raw = peak / target
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = step * math.ceil(peak / step)
    return list(range(0, top + 1, step))


def summary(series: Series) -> str:
    """One sentence with the total and the busiest day."""
    if not series:
        return "No usage data."
    days = len(series)
    total = sum(count for _, count in series)
    span = "today" if days == 1 else f"in the last {days} days"
    if total == 0:
        return f"No requests {span}."
    peak_day, peak = max(series, key=lambda point: (point[1], point[0]))
    return (
        f"{requests_text(total)} {span}; "
        f"busiest day {peak_day.isoformat()} with {requests_text(peak)}."
    )


def day_tip(day: dt.date, count: int) -> str:
    """A bar's tooltip: ``2026-11-23: 12 requests``."""
    return f"{day.isoformat()}: {requests_text(count)}"


@dataclass(frozen=True)
class ChartText:
    """The words and numbers a chart shows: English by default; the key
    pages pass their language's (this module stays free of Flask)."""

    summary: Callable[[Series], str] = summary
    tip: Callable[[dt.date, int], str] = day_tip
    axis_day: Callable[[dt.date], str] = short_date
    #: A day in full, as in the sparkline's list of days.
    day: Callable[[dt.date], str] = dt.date.isoformat
    number: Callable[[int], str] = "{:,}".format
    empty: str = "No requests yet"


ENGLISH = ChartText()


def _num(value: float) -> str:
    """Coordinates with at most two decimals, without trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def sparkline(
    series: Series, *, width: int = 100, height: int = 28, words: ChartText = ENGLISH
) -> Markup:
    """A small line chart of the counts, for a table cell.

    Its ``<title>`` gives the total and the busiest day; ``<desc>`` lists
    every day's count.
    """
    text = words.summary(series)
    pad = 3.0
    counts = [count for _, count in series]
    peak = max(counts, default=0)
    parts = [
        Markup(
            '<svg class="ka-sparkline" xmlns="http://www.w3.org/2000/svg" role="img" '
            'width="{w}" height="{h}" viewBox="0 0 {w} {h}" aria-label="{text}">'
            "<title>{text}</title><desc>{desc}</desc>"
        ).format(
            w=width,
            h=height,
            text=text,
            desc=", ".join(f"{words.day(day)}: {words.number(count)}" for day, count in series),
        )
    ]
    if counts:
        step = (width - 2 * pad) / max(len(counts) - 1, 1)
        base = height - pad

        def y(count: int) -> float:
            return base - (count / peak) * (height - 2 * pad) if peak else base

        points = [(pad + i * step, y(count)) for i, count in enumerate(counts)]
        line = " ".join(f"{_num(x)},{_num(py)}" for x, py in points)
        colour = ACCENT if peak else MUTED
        if peak:
            area = f"{_num(points[0][0])},{_num(base)} {line} {_num(points[-1][0])},{_num(base)}"
            parts.append(
                Markup('<polygon class="ka-spark-area" points="{}" fill="{}"/>').format(
                    area, ACCENT_SOFT
                )
            )
        parts.append(
            Markup(
                '<polyline class="ka-spark-line" points="{}" fill="none" stroke="{}" '
                'stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round"/>'
            ).format(line, colour)
        )
        last_x, last_y = points[-1]
        parts.append(
            Markup('<circle class="ka-spark-dot" cx="{}" cy="{}" r="2" fill="{}"/>').format(
                _num(last_x), _num(last_y), colour
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def bar_chart(
    series: Series,
    *,
    width: int = 960,
    height: int = 240,
    label_every: int = 7,
    words: ChartText = ENGLISH,
) -> Markup:
    """A bar per day with a labelled count axis and date labels.

    Each bar sits in a ``<g>`` whose ``<title>`` reads
    ``2026-11-23: 12 requests``; a full-height transparent target under it
    makes the tooltip easy to reach on short bars. The date axis labels
    every ``label_every`` days counted back from the last day, so the last
    day is always labelled.
    """
    text = words.summary(series)
    left, right, top, bottom = 44, 22, 10, 26
    plot_w = width - left - right
    plot_h = height - top - bottom
    counts = [count for _, count in series]
    ticks = nice_ticks(max(counts, default=0))
    top_value = ticks[-1]
    base = top + plot_h
    axis_text = Markup(
        '<text class="ka-axis" x="{x}" y="{y}" text-anchor="{anchor}" '
        'font-size="12" fill="{fill}">{label}</text>'
    )
    parts = [
        Markup(
            '<svg class="ka-barchart" xmlns="http://www.w3.org/2000/svg" role="img" '
            'viewBox="0 0 {w} {h}" preserveAspectRatio="xMidYMid meet" aria-label="{text}">'
            "<title>{text}</title>"
        ).format(w=width, h=height, text=text)
    ]
    for tick in ticks:
        ty = _num(base - tick / top_value * plot_h)
        parts.append(
            Markup(
                '<line class="ka-grid" x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" '
                'stroke="{stroke}" stroke-width="1"/>'
            ).format(x1=left, x2=width - right, y=ty, stroke=GRID)
        )
        parts.append(
            axis_text.format(
                x=left - 8,
                y=_num(base - tick / top_value * plot_h + 4),
                anchor="end",
                fill=LABEL,
                label=words.number(tick),
            )
        )
    if series:
        slot = plot_w / len(series)
        bar_w = max(slot * 0.68, 1.0)
        last = len(series) - 1
        for i, (day, count) in enumerate(series):
            x = left + i * slot
            bar_h = count / top_value * plot_h
            parts.append(
                Markup(
                    '<g class="ka-bar"><title>{tip}</title>'
                    '<rect class="ka-bar-hit" x="{x}" y="{y}" width="{w}" height="{h}" '
                    'fill="transparent"/>'
                ).format(
                    tip=words.tip(day, count),
                    x=_num(x),
                    y=top,
                    w=_num(slot),
                    h=plot_h,
                )
            )
            if count:
                parts.append(
                    Markup(
                        '<rect class="ka-bar-fill" x="{x}" y="{y}" width="{w}" height="{h}" '
                        'rx="2" fill="{fill}"/>'
                    ).format(
                        x=_num(x + (slot - bar_w) / 2),
                        y=_num(base - bar_h),
                        w=_num(bar_w),
                        h=_num(bar_h),
                        fill=ACCENT,
                    )
                )
            parts.append(Markup("</g>"))
            if (last - i) % label_every == 0:
                parts.append(
                    axis_text.format(
                        x=_num(x + slot / 2),
                        y=height - 8,
                        anchor="middle",
                        fill=LABEL,
                        label=words.axis_day(day),
                    )
                )
    parts.append(
        Markup(
            '<line class="ka-baseline" x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" '
            'stroke="{stroke}" stroke-width="1"/>'
        ).format(x1=left, x2=width - right, y=base, stroke=MUTED)
    )
    if not any(counts):
        parts.append(
            Markup(
                '<text class="ka-empty" x="{x}" y="{y}" text-anchor="middle" font-size="13" '
                'fill="{fill}">{empty}</text>'
            ).format(
                x=_num(left + plot_w / 2), y=_num(top + plot_h / 2), fill=LABEL, empty=words.empty
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
