"""OperatorJob, moved here from the project package with its table (billing_platform_operatorjob).

A fresh database gets the table; one that had it keeps it, its rows, and its content type's
permissions and grants (renamed to this app).
"""

from importlib import import_module

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

content_type_move = import_module("core.migrations.0001_initial").content_type_move


def content_type_adopt(apps, schema_editor):
    content_type_move(apps, "billing_platform", "console", "operatorjob")


def table_ensure(apps, schema_editor):
    model = apps.get_model("console", "OperatorJob")
    if model._meta.db_table not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(model)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("core", "0001_initial"),
        ("tenants", "0002_stripe_customer_by_stripe_id"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(content_type_adopt, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OperatorJob",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("reaggregate", "Re-aggregate an hour range"),
                                    ("stripe_resync", "Resync from Stripe"),
                                    ("budget_check", "Budget check"),
                                    ("reconciliation", "Reconciliation with Stripe"),
                                ],
                                max_length=32,
                            ),
                        ),
                        (
                            "params",
                            models.JSONField(blank=True, default=dict, help_text="What the job was asked to do."),
                        ),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("progress", models.CharField(blank=True, max_length=500)),
                        ("result", models.JSONField(blank=True, default=dict)),
                        ("error", models.TextField(blank=True)),
                        ("task_id", models.CharField(blank=True, max_length=64, verbose_name="Celery task id")),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "requested_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "tenant",
                            models.ForeignKey(
                                blank=True,
                                help_text="The tenant whose page started the job (account-wide jobs too).",
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="operator_jobs",
                                to="tenants.tenant",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "billing_platform_operatorjob",
                        "ordering": ["-created_at", "-id"],
                        "indexes": [
                            models.Index(fields=["tenant", "-created_at"], name="billing_pla_tenant__3be78e_idx")
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(table_ensure, migrations.RunPython.noop),
    ]
