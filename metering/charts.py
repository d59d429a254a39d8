"""A tenant's usage of each meter over recent days, as figures and a chart (core.charts).

The tenant page (console.tenant_overview) and the metering admin's usage chart both show this, from
the same selector (`metering.selectors.daily_usage`) and the same builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from core.charts import Chart, daily_chart
from core.money import format_quantity, sum_exact


@dataclass
class MeterUsageChart:
    code: str
    unit: str
    total: str  # the window's usage, formatted
    peak: str  # the busiest day's
    figures: list[tuple[date, str]]  # (day, usage) of the days with usage, oldest first
    chart: Chart


def meter_usage_chart(
    *, code: str, unit: str, daily: dict[date, Decimal], days: list[date], **options
) -> MeterUsageChart:
    """`daily`: the meter's usage per day (`daily_usage`); `options`: core.charts.daily_chart's."""
    total = format_quantity(sum_exact(daily.values()))
    period = f"last {len(days)} days"
    return MeterUsageChart(
        code=code,
        unit=unit,
        total=total,
        peak=format_quantity(max(daily.values(), default=Decimal(0))),
        figures=[(day, format_quantity(value)) for day, value in sorted(daily.items())],
        chart=daily_chart(
            daily,
            days,
            title=f"{code} per day (UTC), {period}: {total} {unit}".rstrip(),
            label=f"{code} per day over the {period}, {total} {unit} in all".rstrip(),
            unit=unit,
            empty_text=f"No usage of {code} in the {period}.",
            **options,
        ),
    )
