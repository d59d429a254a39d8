"""The console's admin site: one Tenant admin, the third-party admins it shows, its front page, and the
migration that carries the roles over from the old project package."""

import ast
import importlib
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from django.apps import apps as django_apps
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType

from console.admin import TenantPageAdmin
from console.admin_guards import DJSTRIPE_SHOWN
from console.sites import ConsoleAdminSite
from metering.admin import EstimatedCountPaginator
from metering.tests.factories import MeterFactory, UsageEventFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ["billing_platform", "core", "console", "tenants", "metering", "stripe_sync", "costwatch"]


def product_modules():
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "tests" not in path.relative_to(ROOT).parts and "migrations" not in path.parts:
                yield path


def test_admin_site_is_the_consoles():
    assert isinstance(admin.site, ConsoleAdminSite)


def test_the_tenant_admin_is_registered_once_and_nothing_patches_the_registry():
    assert type(admin.site.get_model_admin(Tenant)) is TenantPageAdmin
    offenders = []
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"unregister", "_registry"}:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr}")
    assert offenders == []


def test_the_tenant_page_offers_every_apps_actions():
    actions = set(TenantPageAdmin.actions)
    assert {"create_api_key", "suspend", "reactivate", "onboard_to_stripe"} <= actions


def test_only_the_dj_stripe_models_the_platform_uses_are_shown_and_read_only(rf, admin_user):
    shown = {model._meta.model_name for model in admin.site._registry if model._meta.app_label == "djstripe"}
    assert shown == set(DJSTRIPE_SHOWN)
    request = rf.get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label == "djstripe":
            assert not model_admin.has_add_permission(request), model
            assert not model_admin.has_change_permission(request), model
            assert not model_admin.has_delete_permission(request), model


def test_the_api_key_librarys_own_admin_is_not_shown(admin_client):
    assert not any(model._meta.app_label == "rest_framework_api_key" for model in admin.site._registry)
    index = BeautifulSoup(admin_client.get("/admin/").content, "html.parser")
    assert "Rest_Framework_Api_Key" not in index.get_text()
    assert index.find(id="app-rest_framework_api_key") is None


def test_front_page_leads_to_the_console_and_there_is_no_dead_view_site_link(client, admin_client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    page = admin_client.get("/admin/")
    assert page.status_code == 200
    soup = BeautifulSoup(page.content, "html.parser")
    assert soup.find(attrs={"data-testid": "operator-dashboard"}) is not None
    assert "View site" not in soup.get_text()
    assert "BILLING_PLATFORM" not in soup.get_text().upper().replace("BILLING PLATFORM", "")


def test_the_daily_report_is_a_route_of_the_admin_site(admin_client):
    from django.urls import reverse

    assert reverse("admin:daily-report") == "/admin/reports/daily/"
    assert admin_client.get(reverse("admin:daily-report")).status_code == 200


def test_the_tenant_form_has_one_stripe_customer_row(admin_client):
    tenant = TenantFactory()
    response = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/")
    page = BeautifulSoup(response.content, "html.parser")
    labels = [label.get_text(strip=True).rstrip(":") for label in page.select("fieldset label")]
    assert labels.count("Stripe customer") == 1


def test_a_capped_count_is_not_shown_as_exact(admin_client, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 3)
    # No usable planner statistics (a table never analyzed): the list counts up to the cap.
    monkeypatch.setattr(EstimatedCountPaginator, "_planner_estimate", staticmethod(lambda queryset: -1))
    tenant, meter = TenantFactory(), MeterFactory()
    UsageEventFactory.create_batch(5, tenant=tenant, meter=meter)
    page = admin_client.get("/admin/metering/usageevent/")
    text = " ".join(BeautifulSoup(page.content, "html.parser").get_text().split())
    assert "more than 3 usage events" in text
    assert "4 usage events" not in text
    assert "estimate" not in text  # counted (up to the cap), not estimated


def test_a_planner_estimate_is_shown_as_an_estimate(admin_client, monkeypatch):
    estimate = staticmethod(lambda queryset: 12_345_678)
    monkeypatch.setattr(EstimatedCountPaginator, "_planner_estimate", estimate)
    UsageEventFactory.create_batch(2)
    page = admin_client.get("/admin/metering/usageevent/")
    text = " ".join(BeautifulSoup(page.content, "html.parser").get_text().split())
    assert "about 12,345,678 (estimate) usage events" in text


# --- The migration from the old layout ------------------------------------------------------------------


def test_roles_granted_under_the_old_app_label_carry_over_to_core():
    move = importlib.import_module("core.migrations.0001_initial").content_type_move
    old = ContentType.objects.create(app_label="billing_platform", model="operatoraccess")
    legacy = Permission.objects.create(content_type=old, codename="view_revenue", name="legacy")
    group = Group.objects.create(name="Legacy finance")
    group.permissions.add(legacy)

    move(django_apps, "billing_platform", "core", "operatoraccess")

    assert not ContentType.objects.filter(app_label="billing_platform").exists()
    assert group.permissions.filter(content_type__app_label="core", codename="view_revenue").exists()


def test_a_content_type_only_under_the_old_label_is_renamed_with_its_grants():
    move = importlib.import_module("core.migrations.0001_initial").content_type_move
    old = ContentType.objects.create(app_label="billing_platform", model="retiredthing")
    permission = Permission.objects.create(content_type=old, codename="do_it", name="Do it")
    group = Group.objects.create(name="Doers")
    group.permissions.add(permission)

    move(django_apps, "billing_platform", "console", "retiredthing")

    old.refresh_from_db()
    assert old.app_label == "console"
    assert group.permissions.get().content_type.app_label == "console"
