from datetime import date
from decimal import Decimal

import pytest
from freezegun import freeze_time

from costwatch.models import CostCheckRun, DailyCost
from costwatch.services import cost_check_run
from costwatch.tests.conftest import month_days, page

pytestmark = pytest.mark.django_db

NOV_1, NOV_20 = date(2026, 11, 1), date(2026, 11, 20)


@freeze_time("2026-11-21 06:00:00")
def test_a_run_stores_one_row_per_day_service_and_tag(cost_explorer):
    cost_explorer.queue(
        page(month_days(NOV_1, NOV_20, [("Amazon EC2", "acme", "2.5"), ("Amazon S3", "", "0.25")]))
    )

    run = cost_check_run(trigger="test")

    assert run.status == CostCheckRun.Status.SUCCEEDED, run.error
    assert (run.checked_date, run.window_start, run.window_end) == (NOV_20, NOV_1, date(2026, 11, 21))
    assert DailyCost.objects.count() == 40
    assert run.month_to_date == Decimal("55.00")
    (request,) = cost_explorer.usage_requests()
    assert request["TimePeriod"] == {"Start": "2026-11-01", "End": "2026-11-21"}
    assert request["Granularity"] == "DAILY"
    assert request["Metrics"] == ["UnblendedCost"]
    assert request["GroupBy"] == [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "TAG", "Key": "tenant"}]


@freeze_time("2026-11-21 06:00:00")
def test_running_twice_for_a_day_updates_and_never_duplicates(cost_explorer):
    cost_explorer.queue(page(month_days(NOV_1, NOV_20, [("Amazon EC2", "acme", "2.5")])))

    first = cost_check_run(trigger="test")
    second = cost_check_run(trigger="test")  # moto answers the same request with the same result

    assert first.cost_rows == second.cost_rows == 20
    assert DailyCost.objects.count() == 20
    assert second.month_to_date == Decimal("50.0")


def test_unattributed_costs_land_in_their_own_bucket(cost_explorer):
    cost_explorer.queue(page({NOV_20: [("Amazon EC2", "acme", "3"), ("AWS Lambda", "", "1.75")]}))

    with freeze_time("2026-11-21 06:00:00"):
        run = cost_check_run(trigger="test")

    assert run.unattributed == Decimal("1.75")
    assert DailyCost.objects.get(tag_value="").service == "AWS Lambda"
    assert "unattributed 1.75 USD" in run.summary


def test_every_page_is_followed_and_counted(cost_explorer):
    cost_explorer.queue(
        page({date(2026, 11, 19): [("Amazon EC2", "acme", "1")]}, token="page-2"),
        page({date(2026, 11, 20): [("Amazon EC2", "acme", "2")]}, token="page-3"),
        page({date(2026, 11, 20): [("Amazon S3", "acme", "4")]}),
    )

    with freeze_time("2026-11-21 06:00:00"):
        run = cost_check_run(trigger="test")

    requests = cost_explorer.usage_requests()
    assert [r.get("NextPageToken") for r in requests] == [None, "page-2", "page-3"]
    assert DailyCost.objects.count() == 3
    assert run.month_to_date == Decimal("7")
    assert run.ce_requests == 3  # no budget: no forecast asked


def test_estimated_days_are_refreshed_on_the_next_run(cost_explorer):
    cost_explorer.queue(
        page(
            {date(2026, 11, 19): [("Amazon EC2", "acme", "1")], NOV_20: [("Amazon EC2", "acme", "2")]},
            estimated={NOV_20},
        ),
        page(
            {
                date(2026, 11, 19): [("Amazon EC2", "acme", "1")],
                NOV_20: [("Amazon EC2", "acme", "2.40")],
                date(2026, 11, 21): [("Amazon EC2", "acme", "3")],
            },
            estimated={date(2026, 11, 21)},
        ),
    )
    with freeze_time("2026-11-21 06:00:00"):
        first = cost_check_run(trigger="test")
    row = DailyCost.objects.get(day=NOV_20)
    assert (row.amount, row.estimated, first.estimated_days) == (Decimal("2"), True, 1)

    with freeze_time("2026-11-22 06:00:00"):
        second = cost_check_run(trigger="test")

    row.refresh_from_db()
    assert (row.amount, row.estimated) == (Decimal("2.40"), False)
    assert DailyCost.objects.get(day=date(2026, 11, 21)).estimated
    assert DailyCost.objects.count() == 3
    assert second.month_to_date == Decimal("6.40")


def test_a_restated_day_rereads_the_previous_month_and_drops_vanished_rows(cost_explorer):
    cost_explorer.queue(
        page({date(2026, 10, 31): [("Amazon EC2", "acme", "5"), ("Amazon EC2", "", "1")]}),
        page({date(2026, 10, 31): [("Amazon EC2", "acme", "6")], NOV_1: [("Amazon EC2", "acme", "2")]}),
    )
    with freeze_time("2026-11-01 06:00:00"):
        cost_check_run(trigger="test")
    with freeze_time("2026-11-02 06:00:00"):
        run = cost_check_run(trigger="test")

    assert (run.window_start, run.window_end) == (date(2026, 10, 29), date(2026, 11, 2))
    assert sorted(DailyCost.objects.values_list("day", "tag_value", "amount")) == [
        (date(2026, 10, 31), "acme", Decimal("6")),
        (NOV_1, "acme", Decimal("2")),
    ]
