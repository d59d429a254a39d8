"""The margin page's cost chart claims nothing it has no data for."""

from datetime import date
from decimal import Decimal

from bs4 import BeautifulSoup
from freezegun import freeze_time

from costwatch.tests.factories import BudgetFactory, DailyCostFactory


@freeze_time("2026-11-29 12:00:00")
def test_a_month_without_costs_says_no_data_not_month_complete(admin_client, admin_user):
    admin_client.force_login(admin_user)
    BudgetFactory(name="Account", amount=Decimal("100"))

    response = admin_client.get("/admin/costwatch/tenantmargin/")

    assert response.status_code == 200
    page = BeautifulSoup(response.content, "html.parser")
    text = " ".join(page.get_text(" ").split())
    assert "Month complete" not in text
    assert "no cost data for this month" in text
    chart = page.find("svg", id="cost-chart")
    assert chart.find("text", class_="empty").get_text() == "No cost data for November 2026."
    assert chart.find_all("rect", class_="bar") == []
    assert chart.find("polyline", class_="forecast-line") is None
    assert chart.find("polyline", class_="budget-line") is not None


@freeze_time("2026-12-10 12:00:00")
def test_a_month_with_costs_to_its_last_day_is_complete(admin_client, admin_user):
    admin_client.force_login(admin_user)
    for day in (1, 30):
        DailyCostFactory(day=date(2026, 11, day), amount=Decimal("10"), currency="USD")

    response = admin_client.get("/admin/costwatch/tenantmargin/?month=2026-11&budget=none")

    text = " ".join(BeautifulSoup(response.content, "html.parser").get_text(" ").split())
    assert "Spent 20.00 USD; month-end forecast 20.00 USD (Month complete)." in text
