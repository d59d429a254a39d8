"""Usage thresholds: checked after each aggregation run, each crossing published once per billing
period (the UTC calendar month), absolute or a percentage of the free allowance; the command and
the admin that set them."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bs4 import BeautifulSoup
from django.core.management import CommandError
from django.urls import reverse
from freezegun import freeze_time

from metering.aggregation import usage_aggregate
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import AggregationRun, UsageThreshold, UsageThresholdCrossing
from metering.tests.factories import MeterFactory
from metering.thresholds import usage_threshold_create, usage_thresholds_check
from outbound.models import WebhookMessage
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db
NOV_20 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DEC_2 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
_ids = iter(range(10**9))


@pytest.fixture
def tokens():
    return MeterFactory(code="tokens", name="Tokens", unit="token", aggregation="sum")


@pytest.fixture
def acme():
    # The free plan: its monthly free allowance is the allowance of every meter without a plan row
    # (metering.allowances), which percentage thresholds are of.
    return TenantFactory(
        slug="acme", external_id="cus-acme", plan=Tenant.Plan.FREE, monthly_free_allowance=Decimal("1000")
    )


def use(tenant, quantity, *, at: datetime, meter="tokens"):
    """Ingest one event of `quantity` an hour before `at` and run the aggregation at `at`."""
    with freeze_time(at):
        event = {
            "id": f"e{next(_ids)}",
            "meter": meter,
            "timestamp": at.replace(minute=0).isoformat(),
            "quantity": str(quantity),
        }
        valid = usage_events_validate(payload={"events": [event]}, now=at)
        usage_events_record(tenant=tenant, events=valid, now=at)
        usage_aggregate(trigger="test")


def crossed() -> list[WebhookMessage]:
    return list(WebhookMessage.objects.filter(type="usage.threshold_crossed").order_by("id"))


def test_an_absolute_threshold_is_published_when_reached_and_once_per_month(acme, tokens):
    threshold = usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("100"))

    use(acme, 60, at=NOV_20)
    assert crossed() == []  # 60 < 100
    use(acme, 50, at=NOV_20.replace(hour=14))
    use(acme, 500, at=NOV_20.replace(hour=16))  # still November: not again

    [message] = crossed()
    assert message.key == f"usage.threshold_crossed:{threshold.pk}:2026-11"
    assert message.tenant_id == acme.pk
    data = message.payload["data"]
    assert data["tenant"]["external_id"] == "cus-acme"
    assert data["meter"] == {"code": "tokens", "name": "Tokens", "unit": "token"}
    assert data["threshold"] == {"id": threshold.pk, "kind": "absolute", "value": "100", "units": "100"}
    assert data["usage"] == "110"
    assert data["period"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}

    # A new month: the count starts again and the crossing is sent again.
    use(acme, 99, at=DEC_2)
    assert len(crossed()) == 1
    use(acme, 1, at=DEC_2.replace(hour=11))  # exactly 100: reached
    december = crossed()[1]
    assert december.key == f"usage.threshold_crossed:{threshold.pk}:2026-12"
    assert december.payload["data"]["usage"] == "100"
    assert december.payload["data"]["period"]["start"] == "2026-12-01T00:00:00Z"
    assert UsageThresholdCrossing.objects.filter(threshold=threshold).count() == 2


def test_a_percent_of_allowance_threshold_resolves_to_units(acme, tokens):
    usage_threshold_create(tenant=acme, meter=tokens, kind="percent_of_allowance", value=Decimal("80"))
    use(acme, 799, at=NOV_20)
    assert crossed() == []
    use(acme, 1, at=NOV_20.replace(hour=14))
    [message] = crossed()
    threshold = message.payload["data"]["threshold"]
    assert (threshold["kind"], threshold["value"], threshold["units"]) == (
        "percent_of_allowance",
        "80",
        "800",
    )
    assert message.payload["data"]["usage"] == "800"


def test_a_percent_of_no_allowance_never_crosses(tokens):
    tenant = TenantFactory(slug="nofree", monthly_free_allowance=Decimal("0"))
    usage_threshold_create(tenant=tenant, meter=tokens, kind="percent_of_allowance", value=Decimal("50"))
    use(tenant, 10**6, at=NOV_20)
    assert crossed() == []


def test_only_the_tenants_own_usage_of_that_meter_counts_and_disabled_thresholds_stay_silent(acme, tokens):
    other_meter = MeterFactory(code="calls", aggregation="sum")
    globex = TenantFactory(slug="globex")
    usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("100"))
    usage_threshold_create(tenant=globex, meter=tokens, kind="absolute", value=Decimal("5"), enabled=False)

    use(globex, 500, at=NOV_20)  # another tenant (whose threshold is disabled)
    use(acme, 500, at=NOV_20.replace(hour=14), meter=other_meter.code)  # another meter
    assert crossed() == []
    use(acme, 100, at=NOV_20.replace(hour=15))
    assert [m.payload["data"]["tenant"]["slug"] for m in crossed()] == ["acme"]


def test_checking_the_same_period_twice_publishes_once(acme, tokens):
    usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("10"))
    use(acme, 20, at=NOV_20)
    with freeze_time(NOV_20):
        assert usage_thresholds_check(periods=[(acme.pk, tokens.pk, NOV_20)]) == []
    assert len(crossed()) == 1


def test_a_month_that_ended_before_the_threshold_existed_is_not_reported(acme, tokens):
    use(acme, 500, at=NOV_20)
    with freeze_time(DEC_2):
        usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("10"))
        # A late event for November changes November's total after the threshold was made.
        assert usage_thresholds_check(periods=[(acme.pk, tokens.pk, NOV_20)]) == []
    assert crossed() == []


def test_a_crossing_whose_publish_fails_is_not_recorded_and_is_found_again(acme, tokens, monkeypatch):
    usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("10"))

    def refuse(**kwargs):
        raise ValueError("the publish fails")

    monkeypatch.setattr("metering.thresholds.webhook_event_publish", refuse)
    with pytest.raises(ValueError, match="the publish fails"):
        use(acme, 20, at=NOV_20)
    assert AggregationRun.objects.get().status == AggregationRun.Status.FAILED
    assert not UsageThresholdCrossing.objects.exists()  # rolled back with the failed publish
    assert crossed() == []

    monkeypatch.undo()
    with freeze_time(NOV_20):
        [crossing] = usage_thresholds_check(periods=[(acme.pk, tokens.pk, NOV_20)])
    assert crossing.usage == 20
    assert len(crossed()) == 1


# --- the command ----------------------------------------------------------------------------------


def test_create_usage_threshold_by_units_or_percent(acme, tokens):
    [line] = run_command("create_usage_threshold", "cus-acme", "tokens", "--units", "5000")
    absolute = UsageThreshold.objects.get(kind="absolute")
    assert absolute.value == 5000
    assert absolute.enabled
    assert line.startswith(f"usage threshold {absolute.pk}: acme tokens at 5,000 (enabled)")

    run_command("create_usage_threshold", "acme", "tokens", "--percent", "80")
    percent = UsageThreshold.objects.get(kind="percent_of_allowance")
    assert percent.value == 80
    assert percent.units(acme.monthly_free_allowance) == 800


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "tokens", "--units", "5"], "no tenant with slug, external id or id 'nobody'"),
        (["acme", "nope", "--units", "5"], "no meter with code 'nope'"),
        (["acme", "tokens", "--units", "0"], "must be at least"),
        (["acme", "tokens", "--percent", "-1"], "must be at least"),
        (["acme", "tokens", "--units", "abc"], "must be a decimal number"),
        (["acme", "tokens"], "one of the arguments --units --percent is required"),
        (["acme", "tokens", "--units", "5", "--percent", "5"], "not allowed with argument"),
    ],
)
def test_create_usage_threshold_refusals_write_nothing(acme, tokens, args, message):
    with pytest.raises(CommandError, match=message):
        run_command("create_usage_threshold", *args)
    assert not UsageThreshold.objects.exists()


def test_the_same_threshold_twice_is_refused(acme, tokens):
    run_command("create_usage_threshold", "acme", "tokens", "--units", "5")
    with pytest.raises(CommandError, match="acme already has this threshold on tokens"):
        run_command("create_usage_threshold", "acme", "tokens", "--units", "5.000")
    assert UsageThreshold.objects.count() == 1


# --- the admin ------------------------------------------------------------------------------------


def test_admin_lists_adds_filters_and_disables_thresholds(admin_client, acme, tokens):
    url = reverse("admin:metering_usagethreshold_changelist")
    response = admin_client.post(
        reverse("admin:metering_usagethreshold_add"),
        {
            "tenant": acme.pk,
            "meter": tokens.pk,
            "kind": "percent_of_allowance",
            "value": "90",
            "enabled": "on",
            "crossings-TOTAL_FORMS": "0",
            "crossings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    threshold = UsageThreshold.objects.get()
    assert (threshold.kind, threshold.value) == ("percent_of_allowance", 90)

    page = admin_client.get(url).content.decode()
    assert "acme" in page
    assert "900" in page
    assert admin_client.get(url, {"enabled__exact": "0"}).context["cl"].result_count == 0
    assert admin_client.get(url, {"kind__exact": "percent_of_allowance"}).context["cl"].result_count == 1

    response = admin_client.post(url, {"action": "disable", "_selected_action": [threshold.pk]})
    assert response.status_code == 302
    threshold.refresh_from_db()
    assert not threshold.enabled


def test_admin_refuses_a_zero_threshold_naming_the_field(admin_client, acme, tokens):
    response = admin_client.post(
        reverse("admin:metering_usagethreshold_add"),
        {
            "tenant": acme.pk,
            "meter": tokens.pk,
            "kind": "absolute",
            "value": "0",
            "crossings-TOTAL_FORMS": "0",
            "crossings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "value" in response.context["adminform"].form.errors
    assert not UsageThreshold.objects.exists()


def test_a_thresholds_page_shows_its_crossings_with_plain_numbers(admin_client, acme, tokens):
    # The crossings inline is read-only: its Decimal columns are shown as plain numbers (a 500 once).
    threshold = usage_threshold_create(tenant=acme, meter=tokens, kind="absolute", value=Decimal("100"))
    use(acme, 120.5, at=NOV_20)
    response = admin_client.get(reverse("admin:metering_usagethreshold_change", args=[threshold.pk]))
    assert response.status_code == 200
    inline = BeautifulSoup(response.content, "html.parser").select_one("#crossings-group")
    assert inline is not None
    cells = [cell.get_text(strip=True) for cell in inline.select("tbody td")]
    assert "120.5" in cells
    assert "100" in cells
