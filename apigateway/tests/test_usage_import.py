"""API Gateway's GetUsage (answered by tests/aws_proxy.py in AWS's shape) imported as usage events:
once per (key, day), a revised day adds only the difference, for the tenant owning the key."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError
from django.db.models import Sum
from django.utils import timezone

from apigateway import usage_import
from apigateway.models import ApiGatewayUsageDay
from apigateway.usage_import import apigateway_usage_import
from conftest import beat_task
from metering.allowances import plan_allowances_changed
from metering.models import UsageEvent
from metering.tests.factories import MeterFactory, PlanMeterAllowanceFactory
from tenants.tests.factories import TenantFactory
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def requests_meter(settings, usage_plans):
    settings.APIGATEWAY_USAGE_METER = "api_requests"
    return MeterFactory(code="api_requests", name="API requests", unit="request", aggregation="sum")


@pytest.fixture
def now():
    return timezone.now()


def _events(tenant, meter) -> list[tuple[str, Decimal]]:
    return list(
        UsageEvent.objects.filter(tenant=tenant, meter=meter)
        .order_by("id")
        .values_list("event_id", "quantity")
    )


def _day_total(tenant, meter, day) -> Decimal:
    events = UsageEvent.objects.filter(tenant=tenant, meter=meter, timestamp__date=day)
    return events.aggregate(total=Sum("quantity"))["total"] or Decimal(0)


def test_each_key_day_is_imported_once_for_the_tenant_owning_the_key(usage_plans, requests_meter, now):
    acme = TenantFactory(slug="acme", apigateway_key_id="acmekey001")
    other = TenantFactory(slug="other", apigateway_key_id="otherkey01")
    today, yesterday = now.date(), now.date() - timedelta(days=1)
    usage_plans.usage(usage_plans.metered, "acmekey001", yesterday, 1200)
    usage_plans.usage(usage_plans.metered, "acmekey001", today, 30)
    usage_plans.usage(usage_plans.free, "otherkey01", today, 7)

    result = apigateway_usage_import(now=now)

    assert (result.events, result.requests) == (3, 1237)
    plan = usage_plans.metered
    assert _events(acme, requests_meter) == [
        (f"apigw:{plan}:acmekey001:{yesterday}:1", Decimal(1200)),
        (f"apigw:{plan}:acmekey001:{today}:1", Decimal(30)),
    ]
    assert _day_total(acme, requests_meter, yesterday) == 1200
    assert _events(other, requests_meter) == [(f"apigw:{usage_plans.free}:otherkey01:{today}:1", Decimal(7))]
    [request] = usage_plans.requests("GetUsage")[:1]
    assert (request["startDate"], request["endDate"]) == (yesterday.isoformat(), today.isoformat())

    again = apigateway_usage_import(now=now)

    assert (again.events, again.unchanged) == (0, 3)
    assert UsageEvent.objects.count() == 3


def test_a_day_that_grows_adds_only_the_difference_inside_that_day(usage_plans, requests_meter, now):
    acme = TenantFactory(slug="acme", apigateway_key_id="acmekey001")
    yesterday = now.date() - timedelta(days=1)
    usage_plans.usage(usage_plans.metered, "acmekey001", yesterday, 100)
    apigateway_usage_import(now=now)
    usage_plans.usage(usage_plans.metered, "acmekey001", yesterday, 130)  # AWS revised it

    result = apigateway_usage_import(now=now)

    assert (result.events, result.requests) == (1, 30)
    last = UsageEvent.objects.filter(tenant=acme).order_by("id").last()
    assert (last.event_id, last.quantity) == (f"apigw:{usage_plans.metered}:acmekey001:{yesterday}:2", 30)
    assert last.timestamp.date() == yesterday
    assert _day_total(acme, requests_meter, yesterday) == 130
    row = ApiGatewayUsageDay.objects.get(key_id="acmekey001", day=yesterday)
    assert (row.used, row.imported, row.events, row.status) == (130, 130, 2, "imported")


def test_a_count_that_goes_down_is_recorded_and_not_imported(usage_plans, requests_meter, now):
    acme = TenantFactory(slug="acme", apigateway_key_id="acmekey001")
    today = now.date()
    usage_plans.usage(usage_plans.metered, "acmekey001", today, 50)
    apigateway_usage_import(now=now)
    usage_plans.usage(usage_plans.metered, "acmekey001", today, 40)

    result = apigateway_usage_import(now=now)

    assert result.lowered == 1
    row = ApiGatewayUsageDay.objects.get(key_id="acmekey001", day=today)
    assert (row.used, row.imported, row.status) == (40, 50, "lowered")
    assert "cannot be negative" in row.note
    assert _day_total(acme, requests_meter, today) == 50
    usage_plans.usage(usage_plans.metered, "acmekey001", today, 65)
    apigateway_usage_import(now=now)
    assert _day_total(acme, requests_meter, today) == 65


def test_keys_of_no_tenant_and_days_past_the_ingest_window_are_recorded_not_imported(
    usage_plans, requests_meter, now
):
    TenantFactory(slug="acme", apigateway_key_id="acmekey001")
    old = now.date() - timedelta(days=40)
    usage_plans.usage(usage_plans.metered, "acmekey001", old, 9)
    usage_plans.usage(usage_plans.metered, "strangerkey", now.date(), 3)

    result = apigateway_usage_import(days=41, now=now)

    assert (result.events, result.too_old, result.unknown_keys) == (0, 1, 1)
    assert ApiGatewayUsageDay.objects.get(key_id="acmekey001").status == "too_old"
    assert ApiGatewayUsageDay.objects.get(key_id="strangerkey").status == "unknown_key"
    assert not UsageEvent.objects.exists()


def test_every_page_of_keys_is_read(usage_plans, requests_meter, now, monkeypatch):
    monkeypatch.setattr(usage_import, "GET_USAGE_PAGE", 1)
    for n in range(3):
        TenantFactory(slug=f"t{n}", apigateway_key_id=f"key{n}")
        usage_plans.usage(usage_plans.free, f"key{n}", now.date(), n + 1)
    assert apigateway_usage_import(days=1, now=now).requests == 6
    positions = [request.get("position") for request in usage_plans.requests("GetUsage")]
    assert positions[:3] == [None, "1", "2"]


def test_the_command_and_the_hourly_task(usage_plans, requests_meter):
    TenantFactory(slug="acme", apigateway_key_id="acmekey001")
    usage_plans.usage(usage_plans.metered, "acmekey001", timezone.now().date(), 5)
    [line] = run_command("import_apigateway_usage", "--days", "1")
    assert line.startswith("1 key-day(s) read: 1 event(s) of 5 request(s) imported")
    assert beat_task("apigateway.import_usage").crontab.minute == "50"


def test_the_import_needs_a_sum_meter(usage_plans, settings):
    settings.APIGATEWAY_USAGE_METER = "calls"
    with pytest.raises(CommandError, match=r"^APIGATEWAY_USAGE_METER names no meter 'calls'"):
        run_command("import_apigateway_usage")
    MeterFactory(code="calls", aggregation="count")
    with pytest.raises(CommandError, match="request counts need a sum meter"):
        run_command("import_apigateway_usage")


def test_requests_past_a_hard_limit_the_plan_refuses_beyond_are_recorded_and_tried_again(
    usage_plans, requests_meter, now
):
    acme = TenantFactory(slug="acme", plan="free", apigateway_key_id="acmekey001")
    allowance = PlanMeterAllowanceFactory(
        plan="free", meter=requests_meter, included=Decimal(100), hard_limit=Decimal(100), at_limit="refuse"
    )
    usage_plans.usage(usage_plans.free, "acmekey001", now.date(), 150)

    assert apigateway_usage_import(days=1, now=now).refused == 1

    row = ApiGatewayUsageDay.objects.get(key_id="acmekey001")
    assert (row.status, row.imported) == ("refused", 0)
    assert "limited to 100" in row.note
    assert not UsageEvent.objects.exists()
    allowance.hard_limit = Decimal(1000)
    allowance.save()
    plan_allowances_changed()  # as metering's service does after a change
    assert apigateway_usage_import(days=1, now=now).requests == 150
    assert _day_total(acme, requests_meter, now.date()) == 150
