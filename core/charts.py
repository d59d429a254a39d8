"""One chart builder: a series of daily values -> the SVG geometry that core/_chart.html draws.

Every chart of the platform (the dashboard's events, the tenant page's and the metering admin's usage
per meter, costwatch's month of costs) is a row of day slots with bars, optionally lines over them
(cumulative spend, a budget level, a forecast), a y axis going up in 1, 2 or 5 x 10^n steps to cover
the largest value, and the first, middle and last days labelled. The geometry is computed here, in
pixels; the template only places it:

    {% include "core/_chart.html" with chart=chart %}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from core.money import format_quantity, plain_decimal

PLOT_TOP = 8  # room above the plot for the top tick's label
MAX_TICKS = 5

Number = int | Decimal


def tick_step(largest: int) -> int:
    """The smallest 1, 2 or 5 x 10^n that covers `largest` in at most MAX_TICKS steps."""
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if -(-largest // step) <= MAX_TICKS:
                return step
        magnitude *= 10


def day_label(day: date) -> str:
    return f"{day:%b} {day.day}"  # "Nov 8", as the admin's "M j"


@dataclass(frozen=True)
class Bar:
    day: str  # ISO date
    value: Number
    data_value: str  # the value as plain text (no grouping, no exponent)
    title: str  # "2026-11-18: 1,500 calls"
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Line:
    css_class: str  # "cumulative", "budget-line", "forecast-line", ...
    points: str  # "x,y x,y ..."
    title: str = ""
    color: str = "#417690"
    width: str = "2"
    dash: str = ""  # stroke-dasharray, e.g. "6 4"


@dataclass
class Chart:
    """What core/_chart.html draws; build it with `daily_chart`."""

    days: list[date]
    top: int  # the y axis' maximum, in the values' unit (0: nothing to show)
    width: int
    height: int
    plot_left: int
    plot_top: int
    plot_right: int
    plot_bottom: int
    plot_height: int
    slot: int
    bars: list[Bar]
    y_ticks: list[tuple[str, int]]  # (label, y)
    x_labels: list[tuple[int, str]]  # (x, label)
    title: str  # the SVG's <title>: what the chart shows
    label: str  # its aria-label
    y_title: str  # along the y axis: the unit
    x_title: str
    empty: bool  # no bar above zero (lines may still be drawn: a budget level)
    empty_text: str
    svg_id: str = ""
    css_class: str = ""
    testid: str = ""
    bar_testid: str = ""
    data: dict[str, str] = field(default_factory=dict)  # data-* attributes of the <svg>
    lines: list[Line] = field(default_factory=list)

    @property
    def plot_middle(self) -> int:
        return self.plot_top + self.plot_height // 2

    @property
    def plot_center(self) -> int:
        return (self.plot_left + self.plot_right) // 2

    def y_of(self, value: Number) -> int:
        return self.plot_bottom - (round(value / self.top * self.plot_height) if self.top else 0)

    def x_of(self, day: date) -> int:
        """The middle of the day's slot."""
        return self.plot_left + self.days.index(day) * self.slot + self.slot // 2

    def add_line(self, css_class: str, points: Sequence[tuple[date, Number]], **style) -> None:
        """A polyline through (day, value) points, each at the middle of its day's slot."""
        if points:
            self.lines.append(
                Line(
                    css_class=css_class,
                    points=" ".join(f"{self.x_of(day)},{self.y_of(value)}" for day, value in points),
                    **style,
                )
            )

    def add_level(self, css_class: str, value: Number, **style) -> None:
        """A horizontal line across the plot at `value` (a budget, a limit)."""
        y = self.y_of(value)
        self.lines.append(
            Line(css_class=css_class, points=f"{self.plot_left},{y} {self.plot_right},{y}", **style)
        )


def daily_chart(
    values: Mapping[date, Number],
    days: list[date],
    *,
    title: str,
    unit: str = "",
    label: str = "",
    plot_height: int = 160,
    slot: int = 22,
    bar_width: int = 16,
    left: int = 56,
    bottom_margin: int = 34,
    every_day: bool = True,
    cover: Sequence[Number] = (),
    value_text: Callable[[Number], str] = format_quantity,
    empty_text: str = "No data in this period.",
    **attributes,
) -> Chart:
    """Bars of daily values over `days`; the y axis covers the largest of them and of `cover` (values
    lines will be drawn at). Values may be Decimal: the axis covers the largest's ceiling.

    `every_day`: a bar for every day, zero-high for a day without a value (False: only days with a
    value above zero). A day with a value above zero is at least a pixel high. `attributes`: the Chart's
    svg_id, css_class, testid, bar_testid and data.
    """
    largest = max([*values.values(), *cover], default=0)
    ceiling = math.ceil(largest)
    step = tick_step(ceiling) if largest > 0 else 1
    top = -(-ceiling // step) * step  # 0 for nothing above zero
    plot_bottom = PLOT_TOP + plot_height
    width = left + slot * len(days) + 8
    chart = Chart(
        days=days,
        top=top,
        width=width,
        height=plot_bottom + bottom_margin,
        plot_left=left,
        plot_top=PLOT_TOP,
        plot_right=left + slot * len(days),
        plot_bottom=plot_bottom,
        plot_height=plot_height,
        slot=slot,
        bars=[],
        y_ticks=[],
        x_labels=[],
        title=title,
        label=label or title,
        y_title=unit,
        x_title="Day (UTC)",
        empty=not any(value > 0 for value in values.values()),
        empty_text=empty_text,
        **attributes,
    )
    chart.y_ticks = [(f"{tick:,}", chart.y_of(tick)) for tick in range(0, top + 1, step)]
    for index, day in enumerate(days):
        value = values.get(day, 0)
        if not every_day and not value > 0:
            continue
        height = plot_bottom - chart.y_of(value)
        if value > 0 and not height:
            height = 1  # a day with a value is never invisible
        text = value_text(value)
        chart.bars.append(
            Bar(
                day=day.isoformat(),
                value=value,
                data_value=plain_decimal(value),
                title=f"{day.isoformat()}: {text} {unit}".rstrip(),
                x=left + index * slot + (slot - bar_width) // 2,
                y=plot_bottom - height,
                width=bar_width,
                height=height,
            )
        )
    label_days = sorted({0, len(days) // 2, len(days) - 1}) if days else []
    chart.x_labels = [(left + i * slot + slot // 2, day_label(days[i])) for i in label_days]
    return chart
