"""Operator roles: every admin action, custom admin URL and operator job needs its own permission.

A "view-only" staff user holds every model's default view permission and nothing else. The enumeration
tests walk every registered ModelAdmin and every custom admin URL, so an action or page added later
without a permission fails here. The groups come from the console's migration 0002.
"""

from __future__ import annotations

import importlib
import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from console.models import OperatorJob
from console.operator_jobs import operator_job_queue
from console.tests.page_support import parse
from core.tests.factories import IntervalScheduleFactory, PeriodicTaskFactory
from costwatch.models import Alert, Budget
from costwatch.tests.factories import AlertFactory, BudgetFactory
from metering.tests.factories import MeterFactory
from stripe_sync.circuit import circuit_failure
from stripe_sync.models import CircuitBreaker, UsageReport
from stripe_sync.tests.factories import UsageReportFactory
from tenants.models import Tenant, TenantAPIKey
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db

ROLES_MIGRATION = importlib.import_module("console.migrations.0002_operator_roles")
# Later grants to the same groups, for models added after 0002 (each runs after 0002 in `roles`).
ROLES_GRANTS = [
    importlib.import_module(f"console.migrations.{name}").grant
    for name in ("0004_platform_key_roles", "0005_integration_roles", "0006_plan_and_credit_roles")
]
VIEWER, OPERATOR, FINANCE = ROLES_MIGRATION.VIEWER, ROLES_MIGRATION.OPERATOR, ROLES_MIGRATION.FINANCE

# Custom admin URLs that only show what a viewer may see (usage, health, jobs): the view-only user
# gets them (200), and they change nothing. Every other custom admin URL must answer them 403.
READ_ONLY_URLS = {
    "admin:tenants_tenant_jobs",  # the tenant page's job poll
    "admin:metering_hourlyaggregate_usage_chart",  # usage, no money
    "admin:daily-report",  # its money is left out without view_revenue (tested below)
}
# Django's own pages of a ModelAdmin and of the site: guarded by Django's view/add/change/delete checks.
STANDARD_MODEL_URLS = {"changelist", "add", "history", "delete", "change"}


# --- Users ----------------------------------------------------------------------------------------


@pytest.fixture
def roles(db):
    """The migration's groups (created again: a flushing test may have emptied the table)."""
    run_roles_migration()
    return {group.name: group for group in Group.objects.filter(name__in=[VIEWER, OPERATOR, FINANCE])}


def run_roles_migration():
    ROLES_MIGRATION.create_groups(apps, None)
    for grant in ROLES_GRANTS:
        grant(apps, None)


def default_view_permissions() -> list[Permission]:
    """Every model's default view permission, and nothing else (no custom permission)."""
    wanted = {
        (model._meta.app_label, get_permission_codename("view", model._meta)) for model in apps.get_models()
    }
    return [
        permission
        for permission in Permission.objects.select_related("content_type")
        if (permission.content_type.app_label, permission.codename) in wanted
    ]


@pytest.fixture
def view_only_user(django_user_model, roles):
    user = django_user_model.objects.create_user("viewonly", password="x", is_staff=True)
    user.user_permissions.set(default_view_permissions())
    return django_user_model.objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def view_client(client, view_only_user):
    client.force_login(view_only_user)
    return client


def member(django_user_model, group: Group, username: str):
    user = django_user_model.objects.create_user(username, password="x", is_staff=True)
    user.groups.add(group)
    return django_user_model.objects.get(pk=user.pk)


def request_of(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def activity() -> dict:
    """What an operator action leaves behind, to prove that nothing happened."""
    return {
        "log entries": LogEntry.objects.count(),
        "operator jobs": OperatorJob.objects.count(),
        "api keys": list(TenantAPIKey.objects.order_by("pk").values_list("pk", "revoked")),
        "tenants": list(Tenant.objects.order_by("pk").values_list("pk", "status", "stripe_customer_id")),
        "reports": list(UsageReport.objects.order_by("pk").values_list("pk", "status")),
        "breakers": list(CircuitBreaker.objects.order_by("pk").values_list("pk", "failures")),
        "alerts": list(Alert.objects.order_by("pk").values_list("pk", "acknowledged_at")),
        "budgets": list(Budget.objects.order_by("pk").values_list("pk", "snoozed_until")),
        "periodic tasks": list(PeriodicTask.objects.order_by("pk").values_list("pk", "enabled")),
    }


# --- Every action ---------------------------------------------------------------------------------


def every_action(user) -> dict[str, dict]:
    """{"app.Model": {action name: function}} as the admin offers them to `user`."""
    request = request_of(user)
    return {
        model._meta.label: {name: func for name, (func, _, _) in model_admin.get_actions(request).items()}
        for model, model_admin in admin.site._registry.items()
    }


def test_every_admin_action_declares_the_permissions_it_needs(admin_user):
    offered = every_action(admin_user)
    assert sum(len(actions) for actions in offered.values()) > 20  # the walk found the actions
    undeclared = [
        f"{label}.{name}"
        for label, actions in offered.items()
        for name, func in actions.items()
        if not getattr(func, "allowed_permissions", None)
    ]
    assert undeclared == [], f"admin actions without permissions=[...]: {undeclared}"


def test_a_view_only_user_is_offered_no_admin_action(view_only_user, admin_user):
    assert sum(len(actions) for actions in every_action(admin_user).values()) > 20
    offered = {label: sorted(actions) for label, actions in every_action(view_only_user).items() if actions}
    assert offered == {}


# --- Every custom admin URL -----------------------------------------------------------------------


def custom_admin_urls() -> list[tuple[str, str]]:
    """(URL name, route) of every admin URL that is not Django's own: ModelAdmins' get_urls() beyond
    the changelist/add/history/delete/change pages, and the project's routes under admin/."""
    found = []
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        prefix = f"admin/{info[0]}/{info[1]}/"
        standard = {f"{info[0]}_{info[1]}_{page}" for page in STANDARD_MODEL_URLS}
        for pattern in model_admin.get_urls():
            if isinstance(pattern, URLPattern) and pattern.name and pattern.name not in standard:
                found.append((f"admin:{pattern.name}", prefix + str(pattern.pattern)))
    for pattern in get_resolver().url_patterns:
        route = str(pattern.pattern)
        if isinstance(pattern, URLPattern) and route.startswith("admin/"):
            found.append((pattern.name, route))
        elif isinstance(pattern, URLResolver) and route == "admin/":
            for site_pattern in admin.site.get_urls():
                # The site's own views (index, login, password change, app index, autocomplete, ...)
                # are Django's; a custom one would be a new name here.
                # Unnamed: the catch-all that redirects unknown admin paths to the login or a 404.
                if (
                    isinstance(site_pattern, URLPattern)
                    and site_pattern.name
                    and site_pattern.name
                    not in {
                        "index",
                        "login",
                        "logout",
                        "password_change",
                        "password_change_done",
                        "autocomplete",
                        "jsi18n",
                        "view_on_site",
                        "app_list",
                    }
                ):
                    found.append((f"admin:{site_pattern.name}", "admin/" + str(site_pattern.pattern)))
    return found


def fill(route: str, values: dict[str, str]) -> str:
    """A concrete path for a route: each <converter:name> replaced by values[name]."""
    route = route.lstrip("^").rstrip("$")
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: values[match.group(1)], route)


def test_every_custom_admin_url_refuses_a_view_only_user(view_client, view_only_user, tenant, roles):
    issue_key(tenant)
    key = TenantAPIKey.objects.get(tenant=tenant)
    urls = custom_admin_urls()
    names = {name for name, _ in urls}
    # The walk sees the operator pages of every app (a regression of the walk itself fails here).
    assert {
        "admin:tenants_tenant_suspend",
        "admin:tenants_tenant_rotate_key",
        "admin:stripe_sync_reconciliationrun_run",
        "admin:metering_hourlyaggregate_estimate",
        "admin:costwatch_tenantmargin_csv",
        "admin:djstripe_custom_action",
        "admin:daily-report-csv",
    } <= names
    before = activity()
    refused, allowed = [], []
    for name, route in urls:
        values = {"tenant_id": str(tenant.pk), "key_id": str(key.pk), "id": str(view_only_user.pk)}
        if name == "admin:djstripe_custom_action":
            model_name = route.split("/")[2]
            values |= {"model_name": model_name, "action_name": "_sync_all_instances"}
        path = fill(route, values)
        form = {"confirmed": "yes", "apply": "1", "reason": "x", "name": "x"}
        statuses = (view_client.get(path).status_code, view_client.post(path, form).status_code)
        if name in READ_ONLY_URLS:
            allowed.append((name, statuses[0]))
        elif statuses != (403, 403):
            refused.append((name, path, statuses))
    assert refused == [], f"custom admin URLs a view-only user got through (GET, POST): {refused}"
    assert {name for name, _ in allowed} == READ_ONLY_URLS
    assert all(status == 200 for _, status in allowed), allowed
    assert activity() == before


def test_the_djstripe_action_url_refuses_to_cancel_a_subscription_without_the_permission(
    view_client, django_user_model, roles
):
    # dj-stripe's confirmation URL ran any action on any model for any staff user.
    path = "/admin/djstripe/subscription/action/_cancel/subscription/"
    assert view_client.post(path, {"_selected_action": ["1"]}).status_code == 403
    operator = member(django_user_model, roles[OPERATOR], "operator")
    view_client.force_login(operator)
    assert view_client.post(path, {"_selected_action": ["1"]}).status_code == 403
    # A model the URL's admin is not for: the target model's admin decides.
    assert view_client.post("/admin/djstripe/customer/action/_cancel/subscription/").status_code == 403


# --- The issue's repros, as a view-only staff user ------------------------------------------------


def test_view_only_staff_posting_create_api_key_gets_no_key_and_no_row(view_client, tenant, other_tenant):
    response = view_client.post(
        changelist(Tenant),
        {"action": "create_api_key", "_selected_action": [other_tenant.pk], "apply": "1", "key_name": "x"},
    )
    assert "New API key" not in response.content.decode()
    assert not TenantAPIKey.objects.exists()
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("action", ["suspend", "reactivate"])
def test_view_only_staff_cannot_suspend_or_reactivate_from_the_list(view_client, tenant, action):
    if action == "reactivate":
        Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.SUSPENDED)
    before = activity()
    view_client.post(changelist(Tenant), {"action": action, "_selected_action": [tenant.pk]})
    assert activity() == before


def test_view_only_staff_cannot_onboard_to_stripe(view_client, tenant, local_stripe):
    form = {"action": "onboard_to_stripe", "_selected_action": [tenant.pk], "apply": "1"}
    view_client.post(changelist(Tenant), form)
    tenant.refresh_from_db()
    assert tenant.stripe_customer_id is None
    assert local_stripe.requests == []  # nothing was sent to Stripe
    assert not LogEntry.objects.exists()


def test_view_only_staff_cannot_close_the_breaker(view_client, settings):
    settings.STRIPE_CIRCUIT_FAILURES = 1
    circuit_failure("APIError: Stripe is down")
    breaker = CircuitBreaker.objects.get()
    view_client.post(changelist(CircuitBreaker), {"action": "close", "_selected_action": [breaker.pk]})
    breaker.refresh_from_db()
    assert breaker.open_until is not None
    assert breaker.failures == 1


def failed_report(tenant) -> UsageReport:
    meter = MeterFactory(code="api_calls", name="API calls", unit="calls", aggregation="sum")
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    return UsageReportFactory(
        tenant=tenant,
        meter=meter,
        hour=hour,
        revision=1,
        identifier="rep-1",
        quantity=3,
        value=3,
        customer_id="cus_x",
        event_name="api_calls",
        timestamp=hour,
        status=UsageReport.Status.SENT,
        sent_at=timezone.now(),
    )


@pytest.mark.parametrize("action", ["resend", "cancel_at_stripe"])
def test_view_only_staff_cannot_resend_or_cancel_reports_at_stripe(view_client, tenant, action):
    report = failed_report(tenant)
    if action == "resend":
        UsageReport.objects.filter(pk=report.pk).update(status=UsageReport.Status.FAILED)
    before = activity()
    form = {"action": action, "_selected_action": [report.pk], "confirmed": "yes"}
    response = view_client.post(changelist(UsageReport), form)
    assert "Yes, " not in response.content.decode()  # not even the confirmation page
    assert activity() == before


def test_view_only_staff_cannot_queue_a_reconciliation_run(view_client, monkeypatch):
    from stripe_sync.tasks.reporting import reconcile_usage

    queued = []
    monkeypatch.setattr(reconcile_usage, "delay", lambda **kwargs: queued.append(kwargs))
    assert view_client.post(reverse("admin:stripe_sync_reconciliationrun_run")).status_code == 403
    assert queued == []
    assert not LogEntry.objects.exists()
    page = view_client.get(changelist(apps.get_model("stripe_sync", "ReconciliationRun")))
    assert "Run reconciliation now" not in page.content.decode()


@pytest.mark.parametrize("action", ["acknowledge", "snooze"])
def test_view_only_staff_cannot_acknowledge_or_snooze_budget_alerts(view_client, action):
    budget = BudgetFactory()
    alert = AlertFactory(
        budget=budget, kind="actual", month=timezone.now().date().replace(day=1), actual=1, subject="s"
    )
    before = activity()
    view_client.post(changelist(Alert), {"action": action, "_selected_action": [alert.pk]})
    assert activity() == before


@pytest.mark.parametrize("action", ["enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks"])
def test_view_only_staff_cannot_switch_or_run_periodic_tasks(view_client, action, monkeypatch):
    every = IntervalScheduleFactory(every=1, period=IntervalSchedule.HOURS)
    task = PeriodicTaskFactory(name="t", task="billing_platform.send_daily_report", interval=every)
    before = activity()
    view_client.post(changelist(PeriodicTask), {"action": action, "_selected_action": [task.pk]})
    assert activity() == before


def test_queueing_an_operator_job_without_its_permission_is_refused_by_the_service(
    tenant, view_only_user, django_user_model, roles
):
    for requester in (view_only_user, None, member(django_user_model, roles[FINANCE], "finance")):
        with pytest.raises(PermissionDenied):
            operator_job_queue(kind=OperatorJob.Kind.REAGGREGATE, tenant=tenant, requested_by=requester)
    assert not OperatorJob.objects.exists()
    operator = member(django_user_model, roles[OPERATOR], "operator")
    job = operator_job_queue(kind=OperatorJob.Kind.STRIPE_RESYNC, tenant=tenant, requested_by=operator)
    assert job.requested_by == operator


# --- Money ----------------------------------------------------------------------------------------


def test_staff_without_the_revenue_permission_see_no_money_anywhere(view_client, tenant, settings):
    settings.COSTWATCH_METRIC, settings.COSTWATCH_CURRENCY = "UnblendedCost", "USD"
    dashboard = parse(view_client.get(reverse("admin:index")).content)
    assert dashboard.all("panel-usage")
    assert dashboard.all("panel-billing")
    assert not dashboard.all("panel-costs")
    assert not dashboard.all("top-tenants-revenue")
    assert not dashboard.all("top-tenants-revenue-empty")

    page = parse(view_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content)
    assert page.all("tenant-overview")
    assert page.all("panel-usage")
    for money in ("panel-estimate", "panel-cost", "panel-alerts", "invoices"):
        assert not page.all(money), money

    report = view_client.get(reverse("admin:daily-report"))
    assert report.status_code == 200
    text = report.content.decode()
    assert "Estimated revenue" not in text
    assert "AWS cost" not in text
    assert "daily-report-csv" not in text

    assert view_client.get(reverse("admin:daily-report-csv")).status_code == 403
    assert view_client.get(changelist(apps.get_model("costwatch", "TenantMargin"))).status_code == 403
    assert view_client.get(reverse("admin:costwatch_tenantmargin_csv")).status_code == 403
    estimate = reverse("admin:metering_hourlyaggregate_estimate", args=[tenant.pk])
    assert view_client.get(estimate).status_code == 403
    chart = view_client.get(reverse("admin:metering_hourlyaggregate_usage_chart", args=[tenant.pk]))
    assert chart.status_code == 200
    assert "Month estimate" not in chart.content.decode()


# --- The groups -----------------------------------------------------------------------------------


def test_the_roles_migration_is_idempotent_and_keeps_what_an_operator_added(roles):
    extra = Permission.objects.get(codename="add_meter")
    roles[VIEWER].permissions.add(extra)
    counts = {name: group.permissions.count() for name, group in roles.items()}
    run_roles_migration()
    assert {name: group.permissions.count() for name, group in roles.items()} == counts
    assert Group.objects.filter(name__in=[VIEWER, OPERATOR, FINANCE]).count() == 3


# Registered admin models whose view permission the Billing viewer must NOT have. Every other
# registered model is the viewer's (so the operator's and Finance's): a model added to the admin
# without a grant to the groups (a console migration like 0002) fails the test below.
FINANCE_ONLY = {
    # Money: prices, credit grants, AWS costs, budgets and margin.
    "metering.Price",
    "stripe_sync.CreditGrant",
    *(
        f"costwatch.{name}"
        for name in ("Budget", "DailyCost", "CostCheckRun", "Alert", "PassThroughCharge", "TenantMargin")
    ),
    # Stripe's money objects (invoices, payments, prices) as dj-stripe mirrors them.
    *(
        f"djstripe.{name}"
        for name in (
            "Customer",
            "Subscription",
            "Invoice",
            "LineItem",
            "Price",
            "Product",
            "Charge",
            "PaymentIntent",
            "Refund",
            "BalanceTransaction",
            "Coupon",
            "Discount",
        )
    ),
}
SUPERUSER_ONLY = {
    # Who may do what, and the credentials: users, groups, tenants' raw key rows, Stripe secret
    # keys, webhook signing secrets and raw webhook bodies and headers.
    "auth.User",
    "auth.Group",
    # dj-stripe's other models (keys, webhook secrets, Connect, payouts, raw events...) and the API-key
    # library's own admin are not in the console at all (console/admin_guards.py, DJSTRIPE_SHOWN).
}


def test_every_registered_admin_model_is_viewable_by_a_group_unless_listed_as_finance_or_superuser_only(
    roles,
):
    def view_permissions(group) -> set[str]:
        return {
            f"{app_label}.{codename}"
            for app_label, codename in group.permissions.values_list("content_type__app_label", "codename")
        }

    granted = {name: view_permissions(group) for name, group in roles.items()}
    registered = {model._meta.label: model for model in admin.site._registry}
    assert not (FINANCE_ONLY | SUPERUSER_ONLY) - set(registered), "listed but not in the admin"
    assert not FINANCE_ONLY & SUPERUSER_ONLY
    wrong = {}
    for label, model in registered.items():
        needed = f"{model._meta.app_label}.{get_permission_codename('view', model._meta)}"
        holders = {name for name, permissions in granted.items() if needed in permissions}
        if label in FINANCE_ONLY:
            expected = {FINANCE}
        elif label in SUPERUSER_ONLY:
            expected = set()
        else:
            expected = {VIEWER, OPERATOR, FINANCE}
        if holders != expected:
            wrong[label] = sorted(holders)
    assert wrong == {}, "grant the view permission in a console migration, or list the model"


def test_a_billing_viewer_sees_usage_and_health_without_money_and_changes_nothing(
    client, django_user_model, roles, tenant, settings
):
    settings.COSTWATCH_METRIC, settings.COSTWATCH_CURRENCY = "UnblendedCost", "USD"
    viewer = member(django_user_model, roles[VIEWER], "viewer")
    client.force_login(viewer)
    dashboard = parse(client.get(reverse("admin:index")).content)
    assert dashboard.all("panel-usage")
    assert dashboard.all("panel-billing")
    assert dashboard.all("panel-jobs")
    assert not dashboard.all("panel-costs")
    assert not dashboard.all("top-tenants-revenue-empty")
    page = parse(client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content)
    assert page.all("tenant-overview")
    assert not page.all("panel-estimate")
    for button in ("action-suspend", "action-create-key", "action-onboard", "action-reaggregate"):
        assert not page.all(button), button
    assert {label: a for label, a in every_action(viewer).items() if a} == {}
    assert client.get(reverse("admin:djstripe_invoice_changelist")).status_code == 403
    assert client.get(changelist(apps.get_model("stripe_sync", "ReportingBalance"))).status_code == 200


def test_the_read_only_tenant_form_shows_each_field_once(client, django_user_model, roles, tenant):
    client.force_login(member(django_user_model, roles[VIEWER], "viewer"))
    html = client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()
    assert html.count("<label>Stripe customer:</label>") == 1


def test_a_billing_operator_can_suspend_create_a_key_and_run_jobs_but_sees_no_money(
    client, django_user_model, roles, tenant, settings
):
    settings.COSTWATCH_METRIC, settings.COSTWATCH_CURRENCY = "UnblendedCost", "USD"
    operator = member(django_user_model, roles[OPERATOR], "operator")
    client.force_login(operator)
    page = parse(client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content)
    for button in ("action-suspend", "action-create-key", "action-onboard", "action-reaggregate"):
        assert page.all(button), button
    assert not page.all("panel-estimate")
    assert not page.all("panel-cost")

    response = client.post(
        changelist(Tenant),
        {"action": "create_api_key", "_selected_action": [tenant.pk], "apply": "1", "key_name": "ops"},
        follow=True,
    )
    assert "New API key for tenant-a" in response.content.decode()
    assert TenantAPIKey.objects.filter(tenant=tenant, name="ops").exists()

    suspend = reverse("admin:tenants_tenant_suspend", args=[tenant.pk])
    client.post(suspend, {"confirmed": "yes", "reason": "unpaid"})
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.SUSPENDED

    client.post(reverse("admin:tenants_tenant_budget_check", args=[tenant.pk]), {"confirmed": "yes"})
    assert OperatorJob.objects.filter(kind=OperatorJob.Kind.BUDGET_CHECK, requested_by=operator).exists()

    offered = every_action(operator)
    assert {"resend"} <= set(offered["stripe_sync.UsageReport"])
    assert "cancel_at_stripe" not in offered["stripe_sync.UsageReport"]
    assert {"replay"} <= set(offered["stripe_sync.WebhookEvent"])
    assert offered["costwatch.Alert"] == {}
    assert client.get(reverse("admin:daily-report-csv")).status_code == 403


def test_finance_sees_revenue_and_margin_and_can_cancel_at_stripe(
    client, django_user_model, roles, tenant, settings
):
    settings.COSTWATCH_METRIC, settings.COSTWATCH_TENANT_TAG_KEY = "UnblendedCost", "tenant"
    settings.COSTWATCH_CURRENCY = "USD"
    finance = member(django_user_model, roles[FINANCE], "finance")
    client.force_login(finance)
    dashboard = parse(client.get(reverse("admin:index")).content)
    assert dashboard.all("panel-costs")
    assert dashboard.all("top-tenants-revenue") or dashboard.all("top-tenants-revenue-empty")
    page = parse(client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content)
    assert page.all("panel-estimate")
    assert page.all("panel-cost")
    assert not page.all("action-suspend")
    assert not page.all("action-create-key")

    assert client.get(reverse("admin:daily-report-csv")).status_code == 200
    assert client.get(changelist(apps.get_model("costwatch", "TenantMargin"))).status_code == 200
    assert client.get(reverse("admin:costwatch_tenantmargin_csv")).status_code == 200

    offered = every_action(finance)
    assert set(offered["stripe_sync.UsageReport"]) == {"cancel_at_stripe"}
    assert {"acknowledge", "snooze"} <= set(offered["costwatch.Alert"])
    assert "_cancel" in offered["djstripe.Subscription"]
    report = failed_report(tenant)
    response = client.post(
        changelist(UsageReport), {"action": "cancel_at_stripe", "_selected_action": [report.pk]}
    )
    assert "Yes, cancel them at Stripe" in response.content.decode()  # the confirmation, then Stripe
