import importlib
import re
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from metering.admin import EstimatedCountPaginator
from metering.aggregation import usage_aggregate
from metering.models import (
    AggregationRun,
    HourlyAggregate,
    Meter,
    MeterFilter,
    PendingHour,
    Price,
    UsageEvent,
)
from metering.tests.factories import (
    AggregationRunFactory,
    HourlyAggregateChangeFactory,
    HourlyAggregateFactory,
    MeterFactory,
    MeterFilterFactory,
    PendingHourFactory,
    PriceFactory,
    UsageEventFactory,
)
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

AGGREGATION_LOCKED_MESSAGE = (
    "This meter already has events; its aggregation cannot change. Create a new meter instead."
)


@pytest.fixture
def meter():
    return MeterFactory(code="api-calls", name="API calls", unit="call", aggregation=Meter.Aggregation.COUNT)


def this_hour():
    return timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def meter_form_data(meter, *, filters=(), **overrides):
    """The POST of the meter change form, with the management forms of its inlines."""
    data = {
        "code": meter.code,
        "name": meter.name,
        "unit": meter.unit,
        "aggregation": meter.aggregation,
        "unique_property": meter.unique_property,
        "filters-TOTAL_FORMS": str(len(filters)),
        "filters-INITIAL_FORMS": str(sum(1 for row in filters if row.get("id"))),
        "filters-MIN_NUM_FORMS": "0",
        "filters-MAX_NUM_FORMS": "1000",
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
        "plan_allowances-TOTAL_FORMS": "0",
        "plan_allowances-INITIAL_FORMS": "0",
        "plan_allowances-MIN_NUM_FORMS": "0",
        "plan_allowances-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(filters):
        data[f"filters-{index}-meter"] = str(meter.pk)
        data[f"filters-{index}-id"] = str(row.get("id", ""))
        for field in ("property", "operator", "values"):
            data[f"filters-{index}-{field}"] = row[field]
    data.update(overrides)
    return data


def change_url(meter):
    return f"/admin/metering/meter/{meter.pk}/change/"


def test_every_metering_admin_page_loads(admin_client, tenant, meter):
    event = UsageEventFactory(tenant=tenant, meter=meter, event_id="evt-1", properties={"status": 200})
    aggregate = HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("3"), event_count=3
    )
    HourlyAggregateChangeFactory(
        aggregate=aggregate, revision=1, old_value=None, new_value=Decimal(3), new_event_count=3
    )
    pending = PendingHourFactory(tenant=tenant, meter=meter, hour=this_hour(), marked_at=timezone.now())
    run = AggregationRunFactory(
        started_at=timezone.now(), trigger="command", status=AggregationRun.Status.FAILED, error="boom\ntrace"
    )
    price = PriceFactory(meter=meter, plan="metered", unit_amount=Decimal("0.5"))
    MeterFilterFactory(meter=meter, property="status", operator="in", values=["200", "201"])

    pages = [
        "/admin/metering/",
        "/admin/metering/meter/",
        "/admin/metering/meter/add/",
        change_url(meter),
        "/admin/metering/price/",
        "/admin/metering/price/add/",
        f"/admin/metering/price/{price.pk}/change/",
        "/admin/metering/usageevent/",
        f"/admin/metering/usageevent/{event.pk}/change/",
        "/admin/metering/hourlyaggregate/",
        f"/admin/metering/hourlyaggregate/{aggregate.pk}/change/",
        "/admin/metering/pendinghour/",
        f"/admin/metering/pendinghour/{pending.pk}/change/",
        "/admin/metering/aggregationrun/",
        f"/admin/metering/aggregationrun/{run.pk}/change/",
    ]
    for url in pages:
        assert admin_client.get(url).status_code == 200, url

    html = admin_client.get("/admin/metering/meter/").content.decode()
    assert "status in 200, 201" in html
    assert "boom" in admin_client.get("/admin/metering/aggregationrun/").content.decode()
    html = admin_client.get(f"/admin/metering/hourlyaggregate/{aggregate.pk}/change/").content.decode()
    assert "Change history" in html


def test_event_pages_are_read_only(admin_client, tenant, meter):
    event = UsageEventFactory(tenant=tenant, meter=meter, event_id="evt-1")
    assert admin_client.get("/admin/metering/usageevent/add/").status_code == 403
    assert admin_client.get(f"/admin/metering/usageevent/{event.pk}/delete/").status_code == 403
    response = admin_client.post(
        f"/admin/metering/usageevent/{event.pk}/change/", {"event_id": "other", "quantity": "9"}
    )
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.event_id == "evt-1"


def test_aggregation_change_is_refused_once_the_meter_has_aggregates(admin_client, tenant, meter):
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("5"))
    response = admin_client.post(change_url(meter), meter_form_data(meter, aggregation="sum"))
    assert response.status_code == 200
    assert AGGREGATION_LOCKED_MESSAGE in response.content.decode()
    meter.refresh_from_db()
    assert meter.aggregation == Meter.Aggregation.COUNT


def test_aggregation_change_is_refused_while_an_hour_is_pending(admin_client, tenant, meter):
    PendingHourFactory(tenant=tenant, meter=meter, hour=this_hour(), marked_at=timezone.now())
    data = meter_form_data(meter, aggregation="unique_count", unique_property="user")
    response = admin_client.post(change_url(meter), data)
    assert AGGREGATION_LOCKED_MESSAGE in response.content.decode()
    meter.refresh_from_db()
    assert meter.aggregation == Meter.Aggregation.COUNT


def test_aggregation_change_is_allowed_before_any_usage(admin_client, meter):
    response = admin_client.post(change_url(meter), meter_form_data(meter, aggregation="sum"))
    assert response.status_code == 302
    meter.refresh_from_db()
    assert meter.aggregation == Meter.Aggregation.SUM


def test_other_fields_still_change_when_the_meter_has_usage(admin_client, tenant, meter):
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("5"))
    response = admin_client.post(change_url(meter), meter_form_data(meter, name="API requests"))
    assert response.status_code == 302
    meter.refresh_from_db()
    assert meter.name == "API requests"


def test_meter_code_is_read_only_once_the_meter_has_usage(admin_client, tenant, meter):
    assert 'name="code"' in admin_client.get(change_url(meter)).content.decode()
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("5"))
    assert 'name="code"' not in admin_client.get(change_url(meter)).content.decode()
    response = admin_client.post(change_url(meter), meter_form_data(meter, code="renamed"))
    assert response.status_code == 302
    meter.refresh_from_db()
    assert meter.code != "renamed"


def test_unique_count_needs_a_property(admin_client, meter):
    response = admin_client.post(change_url(meter), meter_form_data(meter, aggregation="unique_count"))
    assert response.status_code == 200
    assert "A distinct-values meter needs the property to count." in response.content.decode()
    meter.refresh_from_db()
    assert meter.aggregation == Meter.Aggregation.COUNT


def test_meter_with_usage_cannot_be_deleted(admin_client, tenant, meter):
    assert admin_client.get(f"/admin/metering/meter/{meter.pk}/delete/").status_code == 200
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("1"))
    assert admin_client.get(f"/admin/metering/meter/{meter.pk}/delete/").status_code == 403
    assert 'class="deletelink"' not in admin_client.get(change_url(meter)).content.decode()


def test_filter_editor_round_trip(admin_client, meter):
    row = {"property": "status", "operator": "in", "values": "200, 201"}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]))
    assert response.status_code == 302
    meter_filter = MeterFilter.objects.get(meter=meter)
    assert meter_filter.values == ["200", "201"]

    html = admin_client.get(change_url(meter)).content.decode()
    assert 'value="200, 201"' in html

    row = {"id": meter_filter.pk, "property": "status", "operator": "in", "values": "200,201, 404, 201"}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]))
    assert response.status_code == 302
    meter_filter.refresh_from_db()
    assert meter_filter.values == ["200", "201", "404"]


def test_changing_filters_of_a_meter_with_usage_recomputes_its_hours(admin_client, tenant, meter):
    event = UsageEventFactory(tenant=tenant, meter=meter, event_id="evt-1", properties={"status": 404})
    hour = event.timestamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=hour, value=Decimal("1"))
    row = {"property": "status", "operator": "eq", "values": "200"}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]), follow=True)
    assert "Filters changed: 1 hour(s) will be aggregated again." in response.content.decode()
    assert PendingHour.objects.filter(tenant=tenant, meter=meter, hour=hour).exists()


@pytest.fixture
def five_filtered_out_events(tenant, meter):
    """A meter whose only events (5, in one hour) all fail its filter: aggregated, they left no
    aggregate and no pending hour, only raw events."""
    MeterFilterFactory(meter=meter, property="status", operator="eq", values=["200"])
    for n in range(5):
        UsageEventFactory(tenant=tenant, meter=meter, event_id=f"evt-{n}", properties={"status": 500})
    PendingHourFactory(tenant=tenant, meter=meter, hour=this_hour(), marked_at=timezone.now())
    usage_aggregate(trigger="test")
    assert not HourlyAggregate.objects.exists()
    assert not PendingHour.objects.exists()
    return MeterFilter.objects.get(meter=meter)


def test_widening_filters_through_the_admin_counts_5_events_that_all_failed_the_old_filter(
    admin_client, tenant, meter, five_filtered_out_events
):
    row = {"id": five_filtered_out_events.pk, "property": "status", "operator": "in", "values": "200, 500"}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]), follow=True)
    assert "Filters changed: 1 hour(s) will be aggregated again." in response.content.decode()
    usage_aggregate(trigger="test")
    aggregate = HourlyAggregate.objects.get(tenant=tenant, meter=meter)
    assert (aggregate.value, aggregate.event_count) == (5, 5)


def test_removing_the_filter_through_the_admin_counts_the_5_events(
    admin_client, tenant, meter, five_filtered_out_events
):
    row = {"id": five_filtered_out_events.pk, "property": "status", "operator": "eq", "values": "200"}
    data = meter_form_data(meter, filters=[row])
    data["filters-0-DELETE"] = "on"
    response = admin_client.post(change_url(meter), data, follow=True)
    assert "Filters changed: 1 hour(s) will be aggregated again." in response.content.decode()
    usage_aggregate(trigger="test")
    assert HourlyAggregate.objects.get(tenant=tenant, meter=meter).value == 5


def test_a_meter_whose_events_all_fail_its_filter_still_counts_as_used(
    admin_client, tenant, meter, five_filtered_out_events
):
    # Its code is what tenants send, its aggregation what the events mean, and its events
    # refer to it: none may change or go once events exist, aggregated or not.
    assert 'name="code"' not in admin_client.get(change_url(meter)).content.decode()
    assert admin_client.get(f"/admin/metering/meter/{meter.pk}/delete/").status_code == 403
    response = admin_client.post(change_url(meter), meter_form_data(meter, aggregation="sum"))
    assert AGGREGATION_LOCKED_MESSAGE in response.content.decode()
    meter.refresh_from_db()
    assert meter.aggregation == Meter.Aggregation.COUNT


def test_equals_filter_takes_exactly_one_value(admin_client, meter):
    row = {"property": "region", "operator": "eq", "values": "eu, us"}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]))
    assert response.status_code == 200
    assert "&#x27;equals&#x27; takes exactly one value" in response.content.decode()
    assert not MeterFilter.objects.filter(meter=meter).exists()

    row = {"property": "region", "operator": "eq", "values": " , "}
    response = admin_client.post(change_url(meter), meter_form_data(meter, filters=[row]))
    assert response.status_code == 200
    assert not MeterFilter.objects.filter(meter=meter).exists()

    row = {"property": "region", "operator": "eq", "values": "eu"}
    assert admin_client.post(change_url(meter), meter_form_data(meter, filters=[row])).status_code == 302
    assert MeterFilter.objects.get(meter=meter).values == ["eu"]


def test_price_tiers_are_validated_by_the_pricing_module(admin_client, meter):
    pricing = pytest.importorskip("metering.pricing")
    data = {
        "meter": meter.pk,
        "plan": "metered",
        "currency": "USD",
        "model": "graduated",
        "unit_amount": "0",
        "package_size": "1",
        "tiers": "[]",
    }
    with pytest.raises(pricing.PricingError) as expected:
        pricing.price_tiers_validate(model="graduated", tiers=[], package_size=1)
    response = admin_client.post("/admin/metering/price/add/", data)
    assert response.status_code == 200
    assert escape(str(expected.value)) in response.content.decode()
    assert not Price.objects.exists()

    data["model"] = "per_unit"
    data["unit_amount"] = "0.25"
    response = admin_client.post("/admin/metering/price/add/", data)
    assert response.status_code == 302
    assert Price.objects.get().currency == "usd"


def bare_count_queries(queries) -> list[str]:
    # The capped count wraps a LIMITed subquery; a bare count reads the whole table.
    return [
        query["sql"]
        for query in queries
        if re.search(r"COUNT\(", query["sql"], re.IGNORECASE)
        and '"metering_usageevent"' in query["sql"]
        and "LIMIT" not in query["sql"].upper()
    ]


def test_event_list_never_counts_the_whole_table(admin_client, tenant, meter):
    for index in range(3):
        UsageEventFactory(tenant=tenant, meter=meter, event_id=f"evt-{index}")
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/metering/usageevent/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "evt-0" in html
    assert "evt-2" in html
    assert bare_count_queries(captured.captured_queries) == []

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(
            "/admin/metering/usageevent/", {"tenant__id__exact": tenant.pk, "meter__id__exact": meter.pk}
        )
    assert response.status_code == 200
    assert bare_count_queries(captured.captured_queries) == []


@pytest.mark.postgres
def test_unfiltered_count_uses_the_planner_estimate(tenant, meter):
    for index in range(5):
        UsageEventFactory(tenant=tenant, meter=meter, event_id=f"evt-{index}")
    with connection.cursor() as cursor:
        cursor.execute('ANALYZE "metering_usageevent"')

    class SmallCapPaginator(EstimatedCountPaginator):
        count_cap = 2

    with CaptureQueriesContext(connection) as captured:
        assert SmallCapPaginator(UsageEvent.objects.order_by("-id"), 100).count == 5
    assert any("reltuples" in query["sql"] for query in captured.captured_queries)
    assert bare_count_queries(captured.captured_queries) == []

    filtered = UsageEvent.objects.filter(event_id__in=["evt-0", "evt-1", "evt-2", "evt-3"]).order_by("-id")
    assert SmallCapPaginator(filtered, 100).count == 3  # capped at count_cap + 1
    assert EstimatedCountPaginator(filtered, 100).count == 4


def test_event_search_finds_the_exact_id(admin_client, tenant, other_tenant, meter):
    UsageEventFactory(tenant=tenant, meter=meter, event_id="req-42")
    UsageEventFactory(tenant=tenant, meter=meter, event_id="req-420")
    UsageEventFactory(tenant=other_tenant, meter=meter, event_id="req-7")
    response = admin_client.get("/admin/metering/usageevent/", {"q": "req-42"})
    html = response.content.decode()
    assert response.status_code == 200
    assert ">req-42<" in html
    assert "req-420" not in html
    assert "req-7" not in html

    response = admin_client.get("/admin/metering/usageevent/", {"q": "REQ-42"})
    assert ">req-42<" not in response.content.decode()


def test_event_day_filter_keeps_one_utc_day(admin_client, tenant, meter):
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    UsageEventFactory(
        tenant=tenant, meter=meter, event_id="yesterday-late", timestamp=today - timedelta(minutes=1)
    )
    UsageEventFactory(
        tenant=tenant,
        meter=meter,
        event_id="yesterday-early",
        timestamp=today - timedelta(hours=23, minutes=59),
    )
    UsageEventFactory(tenant=tenant, meter=meter, event_id="today", timestamp=today)
    yesterday = (today - timedelta(days=1)).date().isoformat()
    html = admin_client.get("/admin/metering/usageevent/", {"day": yesterday}).content.decode()
    assert "yesterday-late" in html
    assert "yesterday-early" in html
    assert ">today<" not in html

    response = admin_client.get("/admin/metering/usageevent/", {"day": "not-a-day"})
    assert response.status_code == 302  # the admin's "?e=1" answer to bad lookup parameters


def test_usage_chart_draws_one_bar_per_day_with_usage(admin_client, tenant, other_tenant, meter):
    storage = MeterFactory(code="storage-gb", name="Storage", unit="GB", aggregation="max")
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=today - timedelta(days=1) + timedelta(hours=3), value=Decimal("1000")
    )
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=today - timedelta(days=1) + timedelta(hours=4), value=Decimal("500")
    )
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=today - timedelta(days=6) + timedelta(hours=7), value=Decimal("250")
    )
    HourlyAggregateFactory(
        tenant=tenant, meter=storage, hour=today - timedelta(days=2), value=Decimal("12.5")
    )
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=today - timedelta(days=31), value=Decimal("31337")
    )  # outside the window
    HourlyAggregateFactory(
        tenant=other_tenant, meter=meter, hour=today - timedelta(days=1), value=Decimal("4242")
    )  # another tenant

    response = admin_client.get(f"/admin/metering/hourlyaggregate/usage-chart/{tenant.pk}/")
    assert response.status_code == 200
    html = response.content.decode().split('id="content"')[1]  # past the header's CSRF token
    assert html.count('<svg class="usage-chart"') == 2
    assert html.count('<rect class="bar"') == 3
    api_calls, storage_chart = html.split("<h2>api-calls</h2>")[1].split("<h2>storage-gb</h2>")
    assert api_calls.count('<rect class="bar"') == 2
    assert 'height="120"' in api_calls  # the busiest day fills the chart
    assert 'height="20"' in api_calls  # 250 of 1,500
    assert "1,500" in api_calls
    assert "250" in api_calls
    assert "1,750 call" in api_calls
    assert "31,337" not in html
    assert "4,242" not in html
    assert storage_chart.count('<rect class="bar"') == 1
    assert "12.5" in storage_chart

    changelist = admin_client.get("/admin/metering/hourlyaggregate/").content.decode()
    assert f"/admin/metering/hourlyaggregate/usage-chart/{tenant.pk}/" in changelist


def test_usage_chart_without_usage_says_so(admin_client, tenant):
    response = admin_client.get(f"/admin/metering/hourlyaggregate/usage-chart/{tenant.pk}/")
    assert response.status_code == 200
    assert "No usage in the last 30 days." in response.content.decode()
    assert admin_client.get("/admin/metering/hourlyaggregate/usage-chart/999999/").status_code == 404


def test_report_pages_need_a_staff_login(tenant):
    response = Client().get(f"/admin/metering/hourlyaggregate/usage-chart/{tenant.pk}/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_estimate_page_shows_the_month_amounts(admin_client, meter):
    pytest.importorskip("metering.estimates")
    tenant = TenantFactory(slug="estimated", plan=Tenant.Plan.FREE, monthly_free_allowance=Decimal("500"))
    unpriced = MeterFactory(code="storage-gb", name="Storage", unit="GB", aggregation="sum")
    PriceFactory(meter=meter, plan=tenant.plan, currency="usd", unit_amount=Decimal("2"))
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("1500"), event_count=1500
    )
    HourlyAggregateFactory(tenant=tenant, meter=unpriced, hour=this_hour(), value=Decimal("3"))

    response = admin_client.get(f"/admin/metering/hourlyaggregate/estimate/{tenant.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    row = html.split("<td>api-calls</td>")[1].split("</tr>")[0]
    # 1,500 calls, 500 free, 1,000 billable at 2 cents: 20.00 USD.
    assert re.findall(r"<td>([^<]*)</td>", row) == ["1,500", "500", "1,000", "20.00 USD"]
    assert "no price on this plan" in html.split("<td>storage-gb</td>")[1].split("</tr>")[0]
    assert '<th class="estimate-total">20.00 USD</th>' in html


@pytest.mark.parametrize("with_revenue", [False, True], ids=["billing-viewer", "viewer-with-view-revenue"])
def test_aggregate_list_links_the_month_estimate_only_for_staff_holding_view_revenue(
    tenant, meter, with_revenue
):
    from django.contrib.auth.models import Group, Permission

    roles = importlib.import_module("console.migrations.0002_operator_roles")
    roles.create_groups(django_apps, None)
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=roles.VIEWER))
    if with_revenue:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="core", codename="view_revenue")
        )
    HourlyAggregateFactory(tenant=tenant, meter=meter, hour=this_hour(), value=Decimal("7"))
    client = Client()
    client.force_login(user)

    response = client.get("/admin/metering/hourlyaggregate/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f"/admin/metering/hourlyaggregate/usage-chart/{tenant.pk}/" in html
    estimate_url = f"/admin/metering/hourlyaggregate/estimate/{tenant.pk}/"
    assert (estimate_url in html) is with_revenue
    assert ("month estimate" in html) is with_revenue
    if with_revenue:
        assert client.get(estimate_url).status_code != 403


def test_event_search_with_a_tenant_reads_where_the_event_sits(admin_client, tenant, meter):
    from metering.ingest import usage_events_record, usage_events_validate

    moment = timezone.now() - timedelta(days=3)
    payload = {"events": [{"id": "req-99", "meter": meter.code, "timestamp": moment.isoformat()}]}
    now = timezone.now()
    usage_events_record(
        events=usage_events_validate(payload=payload, now=now, tenant=tenant), now=now, tenant=tenant
    )
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(
            "/admin/metering/usageevent/", {"q": "req-99", "tenant__id__exact": tenant.pk}
        )
    assert ">req-99<" in response.content.decode()
    listed = [q["sql"] for q in captured.captured_queries if 'FROM "metering_usageevent"' in q["sql"]]
    if connection.vendor == "postgresql":  # narrowed to the event's timestamp from its key
        assert listed
        assert all('"metering_usageevent"."timestamp" IN' in sql for sql in listed)
