"""core.charts and core/_chart.html: the geometry of a daily chart, and the SVG drawn from it."""

from datetime import date, timedelta
from decimal import Decimal

from bs4 import BeautifulSoup
from django.template.loader import render_to_string

from core.charts import daily_chart, tick_step

DAYS = [date(2026, 11, 1) + timedelta(days=n) for n in range(30)]


def svg(chart) -> BeautifulSoup:
    return BeautifulSoup(render_to_string("core/_chart.html", {"chart": chart}), "html.parser")


def test_the_axis_goes_up_in_1_2_5_steps():
    assert [tick_step(n) for n in (1, 5, 6, 13, 50, 87, 1500, 31337)] == [1, 1, 2, 5, 10, 20, 500, 10000]


def test_a_bar_per_day_the_tallest_filling_the_plot():
    chart = daily_chart(
        {DAYS[3]: 50, DAYS[10]: 5}, DAYS, title="Events", unit="events", testid="c", bar_testid="b"
    )
    assert len(chart.bars) == 30
    heights = {bar.day: bar.height for bar in chart.bars}
    assert heights["2026-11-04"] == 160
    assert heights["2026-11-11"] == 16
    assert heights["2026-11-01"] == 0
    assert [label for label, _ in chart.y_ticks] == ["0", "10", "20", "30", "40", "50"]
    assert [label for _, label in chart.x_labels] == ["Nov 1", "Nov 16", "Nov 30"]
    assert not chart.empty

    page = svg(chart)
    assert page.svg["data-testid"] == "c"
    assert page.svg.title.text == "Events"
    bars = page.find_all("rect", attrs={"data-testid": "b"})
    assert len(bars) == 30
    assert bars[3]["data-value"] == "50"
    assert bars[3].title.text == "2026-11-04: 50 events"


def test_only_days_with_a_value_and_a_small_day_stays_visible():
    chart = daily_chart(
        {DAYS[0]: Decimal("100000"), DAYS[1]: Decimal("0.5"), DAYS[2]: Decimal(0)},
        DAYS,
        title="Usage",
        unit="GB",
        every_day=False,
        plot_height=120,
    )
    assert [(bar.day, bar.height) for bar in chart.bars] == [("2026-11-01", 120), ("2026-11-02", 1)]
    assert chart.bars[1].data_value == "0.5"
    assert chart.bars[0].title == "2026-11-01: 100,000 GB"


def test_decimal_values_never_show_an_exponent():
    chart = daily_chart({DAYS[0]: Decimal("12.500000000000")}, DAYS, title="t", unit="GB", every_day=False)
    assert chart.bars[0].data_value == "12.5"
    assert chart.bars[0].title == "2026-11-01: 12.5 GB"
    assert [label for label, _ in chart.y_ticks] == ["0", "5", "10", "15"]


def test_an_empty_chart_says_so():
    chart = daily_chart({}, DAYS, title="Costs", empty_text="No cost data for November 2026.")
    assert chart.empty
    assert chart.top == 0
    assert all(bar.height == 0 for bar in chart.bars)
    assert svg(chart).find("text", class_="empty").text == "No cost data for November 2026."


def test_lines_share_the_bars_scale():
    chart = daily_chart(
        {DAYS[0]: Decimal("40"), DAYS[1]: Decimal("10")},
        DAYS,
        title="Cost",
        every_day=False,
        cover=[Decimal("100")],
        svg_id="cost-chart",
    )
    chart.add_line("cumulative", [(DAYS[0], Decimal("40")), (DAYS[1], Decimal("50"))])
    chart.add_level("budget-line", Decimal("100"), dash="6 4")
    assert chart.top == 100
    assert chart.y_of(Decimal("100")) == chart.plot_top
    page = svg(chart)
    assert page.svg["id"] == "cost-chart"
    budget = page.find("polyline", class_="budget-line")
    assert budget["points"] == f"{chart.plot_left},{chart.plot_top} {chart.plot_right},{chart.plot_top}"
    assert budget["stroke-dasharray"] == "6 4"
    cumulative = page.find("polyline", class_="cumulative")["points"].split()
    assert cumulative == [
        f"{chart.x_of(DAYS[0])},{chart.y_of(40)}",
        f"{chart.x_of(DAYS[1])},{chart.y_of(50)}",
    ]
