"""The integrations in the operator roles: outgoing webhooks (outbound), usage queues and usage
thresholds (metering). Every role sees the endpoints, the delivery log and its messages (never a
secret: it is shown once, after adding or rotating), the queues with their counts and last error, and
the thresholds with their crossings. The Billing operator adds endpoints, re-enables, disables,
rotates secrets, sends test events and replays deliveries; enables, disables and consumes queues; and
adds, changes, enables and disables thresholds. Idempotent, removes nothing."""

import importlib

from django.db import migrations

ROLES = importlib.import_module("console.migrations.0002_operator_roles")

VIEW = [
    "outbound.view_webhookendpoint",
    "outbound.view_webhookdelivery",
    "outbound.view_webhookmessage",
    "outbound.view_webhookattempt",
    "metering.view_usagequeue",
    "metering.view_usagethreshold",
    "metering.view_usagethresholdcrossing",
]
GRANTS = {
    ROLES.VIEWER: VIEW,
    ROLES.FINANCE: VIEW,
    ROLES.OPERATOR: [
        *VIEW,
        "outbound.add_webhookendpoint",
        "outbound.change_webhookendpoint",  # re-enable, disable, rotate the secret, send a test event
        "outbound.change_webhookdelivery",  # replay
        "metering.change_usagequeue",  # enable, disable, consume now
        "metering.add_usagethreshold",
        "metering.change_usagethreshold",  # enable, disable
    ],
}


def grant(apps, schema_editor):
    ROLES.groups_grant(apps, GRANTS, ["outbound", "metering"])


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0004_platform_key_roles"),
        ("outbound", "0002_previous_secret"),
        ("metering", "0008_usage_thresholds"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
