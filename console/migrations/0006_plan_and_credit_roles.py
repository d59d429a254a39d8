"""Issue 13's models in the operator roles. Every role sees where each API key sits among the API
Gateway usage plans and the daily counts imported from API Gateway; the Billing operator may also
"Sync now" (move keys into place). Per plan and meter allowances and limits are commercial terms,
seen by every role and set by Finance. Credit grants are money: Finance alone sees, grants, sends
again and voids them. Idempotent, removes nothing."""

import importlib

from django.db import migrations

ROLES = importlib.import_module("console.migrations.0002_operator_roles")

VIEW = [
    "apigateway.view_usageplanplacement",
    "apigateway.view_apigatewayusageday",
    "metering.view_planmeterallowance",
]
GRANTS = {
    ROLES.VIEWER: VIEW,
    ROLES.OPERATOR: [*VIEW, "apigateway.sync_usage_plans"],
    ROLES.FINANCE: [
        *VIEW,
        "metering.add_planmeterallowance",
        "metering.change_planmeterallowance",
        "metering.delete_planmeterallowance",
        "stripe_sync.view_creditgrant",
        "stripe_sync.add_creditgrant",  # grant, and send a pending grant again
        "stripe_sync.void_creditgrant",
    ],
}


def grant(apps, schema_editor):
    ROLES.groups_grant(apps, GRANTS, ["apigateway", "metering", "stripe_sync"])


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0005_integration_roles"),
        ("apigateway", "0001_initial"),
        ("metering", "0009_plan_meter_allowances"),
        ("stripe_sync", "0007_credit_grant"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
