"""The operator roles see the pairs' reporting state (stripe_sync.ReportingBalance, whose admin shows
which (tenant, meter) pairs failed to prepare): view permission for the three groups of 0003.

As in 0003, permissions are created here (post_migrate has not run yet on a fresh database), a
missing group is created, and running it again adds what is missing and removes nothing an operator
added. Usage and health, no money: the viewer's, so the operator's and Finance's too.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "Billing viewer"
OPERATOR = "Billing operator"
FINANCE = "Finance"

VIEWER_PERMISSIONS = ["stripe_sync.view_reportingbalance"]
GROUPS = {VIEWER: VIEWER_PERMISSIONS, OPERATOR: VIEWER_PERMISSIONS, FINANCE: VIEWER_PERMISSIONS}


def grant(apps, schema_editor):
    for label in sorted({full.split(".")[0] for wanted in GROUPS.values() for full in wanted}):
        create_permissions(global_apps.get_app_config(label), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, wanted in GROUPS.items():
        permissions = []
        for full in wanted:
            app_label, codename = full.split(".")
            # .get(): a name that does not exist fails the migration instead of a silently weaker role.
            permissions.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("billing_platform", "0003_operator_roles"),
        ("stripe_sync", "0004_reporting_isolation_and_dedup_check"),
    ]

    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]
