"""The operator roles see the pairs' reporting state (stripe_sync.ReportingBalance, whose admin shows
which (tenant, meter) pairs failed to prepare): view permission for the three groups of 0003.

As in 0003, permissions are created here (post_migrate has not run yet on a fresh database), a
missing group is created, and running it again adds what is missing and removes nothing an operator
added. Usage and health, no money: the viewer's, so the operator's and Finance's too.
"""

from importlib import import_module

from django.db import migrations

# The grant of 0003 (a migration module is frozen history, so reusing it keeps this one stable).
groups_grant = import_module("billing_platform.migrations.0003_operator_roles").groups_grant

VIEWER = "Billing viewer"
OPERATOR = "Billing operator"
FINANCE = "Finance"

VIEWER_PERMISSIONS = ["stripe_sync.view_reportingbalance"]
GROUPS = {VIEWER: VIEWER_PERMISSIONS, OPERATOR: VIEWER_PERMISSIONS, FINANCE: VIEWER_PERMISSIONS}


def grant(apps, schema_editor):
    groups_grant(apps, GROUPS, ["stripe_sync"])


class Migration(migrations.Migration):
    dependencies = [
        ("billing_platform", "0003_operator_roles"),
        ("stripe_sync", "0004_reporting_isolation_and_dedup_check"),
    ]

    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]
