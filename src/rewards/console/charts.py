"""Charts drawn on the server by pygal as inline SVG: no script, no CDN (pygal's default
tooltips load from kozea.github.io; here ``js=[]`` and its inline config script is
dropped), a ``<title>`` and an ``aria-label`` for screen readers. Pages show the numbers
beside each chart in a table; the picture is for reading at a glance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import pygal
from markupsafe import Markup, escape
from pygal.style import Style

_STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1d2433",
    foreground_strong="#1d2433",
    foreground_subtle="#5b6478",
    font_family="system-ui, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=13,
    title_font_size=16,
    colors=("#1f5fbf", "#d9822b", "#1d7a46", "#b3261e", "#7b4fb8", "#0f8b8d", "#8a5a00"),
)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)
Number = int | Decimal


def _options(title: str, days: int = 0, **overrides: object) -> dict[str, object]:
    every = max(1, days // 8)
    return {
        **{
            "title": title,
            "js": [],
            "disable_xml_declaration": True,
            "style": _STYLE,
            "width": 720,
            "height": 320,
            "legend_at_bottom": True,
            "legend_at_bottom_columns": 4,
            "x_labels_major_every": every,
            "show_minor_x_labels": days <= 10,
            "truncate_legend": -1,
            "truncate_label": -1,
            "spacing": 12,
            "print_values": False,
            "margin": 8,
            "margin_bottom": 28,
        },
        **overrides,
    }


def _svg(chart: pygal.graph.graph.Graph, label: str) -> Markup:
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
    return Markup(svg.replace('class="pygal-chart"', 'class="pygal-chart chart"', 1))


def _day_labels(days: Sequence[date]) -> list[str]:
    return [day.strftime("%d %b") for day in days]


def stacked_days(
    title: str, days: Sequence[date], series: Sequence[tuple[str, Sequence[Number]]]
) -> Markup:
    """Counts per day, one stacked colour per series."""
    top = max(
        (sum(column) for column in zip(*(values for _, values in series), strict=True)), default=0
    )
    step = max(1, -(-int(top) // 5))  # whole events: at most 6 labels, never 0.1
    chart = pygal.StackedBar(
        **_options(title, len(days), y_labels=list(range(0, int(top) + step + 1, step)))
    )
    chart.x_labels = _day_labels(days)
    for name, values in series:
        chart.add(name, [float(v) for v in values])
    if not series:
        chart.add("none", [0] * len(days))
    return _svg(chart, f"{title}: stacked bars per day; the numbers are in the table beside")


def bars_days(
    title: str, days: Sequence[date], series: Sequence[tuple[str, Sequence[Number]]]
) -> Markup:
    """Amounts per day, series side by side."""
    chart = pygal.Bar(**_options(title, len(days)))
    chart.x_labels = _day_labels(days)
    for name, values in series:
        chart.add(name, [float(v) for v in values])
    return _svg(chart, f"{title}: bars per day; the numbers are in the table beside")


def line_days(title: str, days: Sequence[date], name: str, values: Sequence[Number]) -> Markup:
    chart = pygal.Line(**_options(title, len(days), show_dots=len(days) <= 31, fill=True))
    chart.x_labels = _day_labels(days)
    chart.add(name, [float(v) for v in values])
    return _svg(chart, f"{title}: a line over the days; the numbers are in the table beside")


def horizontal_bars(title: str, items: Sequence[tuple[str, Number]]) -> Markup:
    """One bar per item (top offers by cost), largest first."""
    chart = pygal.HorizontalBar(
        **_options(title, show_legend=False, height=max(160, 60 + 34 * len(items)))
    )
    chart.x_labels = [name for name, _ in reversed(items)]
    chart.add(title, [float(v) for _, v in reversed(items)])
    return _svg(chart, f"{title}: horizontal bars; the numbers are in the table beside")
