"""Platform keys (tenants.PlatformAPIKey) in the operator roles: every role sees them (names, prefixes,
scopes, when used; never a secret); the Billing operator makes and revokes them with the
core.manage_api_keys permission it already holds for tenant keys. Idempotent, removes nothing."""

import importlib

from django.db import migrations

ROLES = importlib.import_module("console.migrations.0002_operator_roles")

GRANTS = {group: ["tenants.view_platformapikey"] for group in (ROLES.VIEWER, ROLES.OPERATOR, ROLES.FINANCE)}


def grant(apps, schema_editor):
    ROLES.groups_grant(apps, GRANTS, ["tenants"])


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0003_operator_job_run_record"),
        ("tenants", "0003_platform_keys_and_external_id"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
