"""The operator roles: three groups an operator assigns to staff users, Billing viewer, Billing
operator and Finance (docs/operations.md, "Operator roles"), holding the permissions of
core.OperatorAccess (a model without a table) and the apps' view and change permissions.
(Before the console was an app, billing_platform's migrations 0003 and 0004 did this.)

Permissions are created here, before post_migrate would: a fresh database has none yet when this runs.
Running it again (or on a database that already has the groups) adds what is missing and removes
nothing an operator added to a group.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "Billing viewer"
OPERATOR = "Billing operator"
FINANCE = "Finance"

# Sees usage and health; no money (no costs, prices, invoices, estimates, margin); changes nothing.
VIEWER_PERMISSIONS = [
    *(f"tenants.view_{model}" for model in ("tenant", "tenantchange", "tenantapikey")),
    *(
        f"metering.view_{model}"
        for model in (
            "meter",
            "meterfilter",
            "usageevent",
            "pendinghour",
            "hourlyaggregate",
            "hourlyaggregatechange",
            "aggregationrun",
        )
    ),
    *(
        f"stripe_sync.view_{model}"
        for model in (
            "stripemeter",
            "tenantsubscription",
            "usagereport",
            "circuitbreaker",
            "reconciliationrun",
            "reconciliationitem",
            "webhookevent",
            "billingnotification",
            "reportingbalance",
        )
    ),
    "console.view_operatorjob",
    *(
        f"django_celery_beat.view_{model}"
        for model in ("periodictask", "crontabschedule", "intervalschedule", "solarschedule", "clockedschedule")
    ),
]

# Runs jobs, replays, resends, suspends, creates keys; still no money.
OPERATOR_PERMISSIONS = [
    *VIEWER_PERMISSIONS,
    "core.run_operator_jobs",
    "core.suspend_tenant",
    "core.manage_api_keys",
    "core.onboard_to_stripe",
    "stripe_sync.change_usagereport",  # resend failed reports
    "stripe_sync.change_webhookevent",  # replay
    "stripe_sync.change_billingnotification",  # send again
    "stripe_sync.change_circuitbreaker",  # close the breaker
]

# Revenue, margin, cancel at Stripe, pass-through, budget alerts.
FINANCE_PERMISSIONS = [
    *VIEWER_PERMISSIONS,
    "core.view_revenue",
    "core.cancel_at_stripe",
    "metering.view_price",
    *(
        f"costwatch.view_{model}"
        for model in (
            "budget",
            "dailycost",
            "costcheckrun",
            "budgetevaluation",
            "alert",
            "passthroughcharge",
            "tenantmargin",
        )
    ),
    "costwatch.add_budget",
    "costwatch.change_budget",  # pass-through, markup, snooze
    "costwatch.change_alert",  # acknowledge
    *(
        f"djstripe.view_{model}"
        for model in (
            "customer",
            "subscription",
            "subscriptionitem",
            "invoice",
            "invoiceitem",
            "lineitem",
            "price",
            "product",
            "charge",
            "paymentintent",
            "refund",
            "balancetransaction",
            "coupon",
            "discount",
        )
    ),
]

GROUPS = {VIEWER: VIEWER_PERMISSIONS, OPERATOR: OPERATOR_PERMISSIONS, FINANCE: FINANCE_PERMISSIONS}
APPS = ["tenants", "metering", "stripe_sync", "costwatch", "core", "console", "django_celery_beat", "djstripe"]


def groups_grant(apps, groups: dict[str, list[str]], app_labels) -> None:
    """Give each group its permissions ("app.codename"), creating what is missing; removes nothing.
    Later role migrations call this too (post_migrate has not created the permissions yet)."""
    for label in app_labels:
        create_permissions(global_apps.get_app_config(label), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, wanted in groups.items():
        permissions = []
        for full in wanted:
            app_label, codename = full.split(".")
            # .get(): a name that does not exist fails the migration instead of a silently weaker role.
            permissions.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*permissions)


def create_groups(apps, schema_editor):
    groups_grant(apps, GROUPS, APPS)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("core", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tenants", "0002_stripe_customer_by_stripe_id"),
        ("metering", "0003_prune_schedule"),
        ("stripe_sync", "0004_reporting_isolation_and_dedup_check"),
        ("costwatch", "0002_check_costs_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("djstripe", "0003_2_11"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
