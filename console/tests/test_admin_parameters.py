"""Every query parameter our admin code parses answers garbage with a message or a 400, never a 500:
the daily report's `date`, the margin page's `month` and `budget`, the usage events' `day` filter, and
every changelist of our apps with a garbage search, page and filter value."""

from urllib.parse import quote

import pytest
from django.contrib import admin
from django.urls import reverse

from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

GARBAGE = [
    "9999-12-31",
    "0001-01",
    "0001-01-01",
    "notadate",
    "2026-13-01",
    "2026-13",
    "9" * 5000,
    "99999999999999999999",
    "-1",
    "²",
    "2026-11-20\x00",
]
# Already percent-encoded: bytes that are not UTF-8 (an unpaired surrogate's encoding, 0xFF).
RAW_GARBAGE = ["%ED%A0%80", "%FF%FE", "2026-11-%00"]

# (page, parameter, what an operator gets for garbage)
PAGES = [
    ("/admin/reports/daily/", "date", {400}),
    ("/admin/reports/daily.csv", "date", {400}),
    ("/admin/costwatch/tenantmargin/", "month", {200}),
    ("/admin/costwatch/tenantmargin/csv/", "month", {400}),
    ("/admin/costwatch/tenantmargin/", "budget", {200}),
    ("/admin/metering/usageevent/", "day", {302}),  # Django's "?e=1" for an invalid filter value
]


@pytest.mark.parametrize(("page", "parameter", "statuses"), PAGES)
def test_admin_pages_answer_garbage_parameters_with_a_message_or_400(admin_client, page, parameter, statuses):
    TenantFactory(slug="acme")
    for value in [quote(value) for value in GARBAGE] + RAW_GARBAGE:
        response = admin_client.get(f"{page}?{parameter}={value}")
        assert response.status_code in statuses, (value, response.status_code)
        if response.status_code == 400 and not page.endswith((".csv", "/csv/")):
            assert "must be" in response.content.decode()


def test_the_daily_report_with_date_9999_12_31_is_a_400_with_the_reason(admin_client):
    response = admin_client.get("/admin/reports/daily/", {"date": "9999-12-31"})
    assert response.status_code == 400
    assert "date: must be between 2000-01-01 and 2100-12-31" in response.content.decode()
    csv = admin_client.get("/admin/reports/daily.csv", {"date": "9999-12-31"})
    assert (csv.status_code, csv.content.decode()) == (400, "date: must be between 2000-01-01 and 2100-12-31")


def test_the_margin_page_with_month_0001_01_shows_the_current_month_and_says_why(admin_client):
    response = admin_client.get("/admin/costwatch/tenantmargin/", {"month": "0001-01"})
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert shown == ["month: must be between 2000-01-01 and 2100-12-31; showing the current month"]
    csv = admin_client.get("/admin/costwatch/tenantmargin/csv/", {"month": "0001-01"})
    assert csv.status_code == 400


@pytest.mark.parametrize("month", ["2000-01", "2100-12"])
def test_the_margin_page_shows_the_first_and_last_months_it_accepts(admin_client, month):
    response = admin_client.get("/admin/costwatch/tenantmargin/", {"month": month})
    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == []


def test_the_usage_event_day_filter_with_9999_12_31_is_refused_not_a_500(admin_client):
    response = admin_client.get("/admin/metering/usageevent/", {"day": "9999-12-31"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def our_changelists() -> list[str]:
    apps = {"core", "console", "tenants", "metering", "stripe_sync", "costwatch"}
    return sorted(
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
        if model._meta.app_label in apps
    )


def test_every_changelist_of_our_apps_answers_garbage_search_page_and_filter_without_a_500(admin_client):
    TenantFactory(slug="acme")
    pages = our_changelists()
    assert len(pages) >= 10
    failures = []
    for page in pages:
        for params in (
            {"q": "9" * 5000},
            {"q": "a\x00b"},
            {"q": "\ufffd"},
            {"p": "99999999999999999999"},
            {"o": "99999"},
            {"tenant__id__exact": "99999999999999999999"},
            {"day": "9999-12-31"},
        ):
            status = admin_client.get(page, params).status_code
            if status >= 500:
                failures.append((page, params, status))
    assert failures == []


HOUR_GARBAGE = ["9999-12-31T23:00", "0001-01-01T00:00", "notadate", "2026-13-01T00:00", "9" * 5000, "\x00"]


def test_the_tenant_page_reaggregate_form_answers_garbage_hours_with_form_errors(admin_client):
    from console.models import OperatorJob

    tenant = TenantFactory(slug="acme")
    page = reverse("admin:tenants_tenant_reaggregate", args=[tenant.pk])
    for first, last in [(value, value) for value in HOUR_GARBAGE] + [
        ("2026-11-01T00:00", "9999-12-31T23:00")
    ]:
        response = admin_client.post(page, {"first_hour": first, "last_hour": last, "confirmed": "yes"})
        assert response.status_code == 200, (first, last)
        assert response.context["form"].errors
    assert not OperatorJob.objects.exists()


def test_the_tenant_page_key_rotation_refuses_an_unstorable_name(admin_client):
    from tenants.services import api_key_issue

    tenant = TenantFactory(slug="acme")
    key = api_key_issue(tenant=tenant, name="old").api_key
    page = reverse("admin:tenants_tenant_rotate_key", args=[tenant.pk, key.pk])
    for name in ["a\x00b", "n" * 51]:
        response = admin_client.post(page, {"name": name, "confirmed": "yes"})
        assert response.status_code == 200
        assert response.context["form"].errors
    assert tenant.api_keys.count() == 1


def test_tenant_page_urls_with_an_id_past_bigint_are_404_not_500(admin_client):
    huge = "9" * 30
    for path in [
        f"/admin/tenants/tenant/{huge}/change/",
        f"/admin/tenants/tenant/{huge}/operations/reaggregate/",
        f"/admin/tenants/tenant/{huge}/keys/{huge}/rotate/",
    ]:
        assert admin_client.get(path).status_code in (302, 404), path
