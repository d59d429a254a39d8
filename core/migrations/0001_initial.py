"""OperatorAccess, the table-less holder of the operator roles' permissions, moved here from the
project package (where it was billing_platform.OperatorAccess).

A database that had it keeps its permissions and every group's and user's grant of them: the content
type is renamed to this app before anything could create a second one.
"""

from django.db import migrations, models

LEGACY_APP = "billing_platform"


def content_type_adopt(apps, schema_editor):
    content_type_move(apps, LEGACY_APP, "core", "operatoraccess")


def content_type_move(apps, old_app: str, new_app: str, model: str) -> None:
    """Give the model's content type (and so its permissions and their grants) to `new_app`. Used by
    the console's migration for OperatorJob too."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old = ContentType.objects.filter(app_label=old_app, model=model).first()
    if old is None:
        return
    new = ContentType.objects.filter(app_label=new_app, model=model).first()
    if new is None:
        old.app_label = new_app
        old.save(update_fields=["app_label"])
        return
    # Both exist (post_migrate ran in between): move each grant to the new permission, drop the old.
    for permission in Permission.objects.filter(content_type=old):
        target, _ = Permission.objects.get_or_create(
            content_type=new, codename=permission.codename, defaults={"name": permission.name}
        )
        for group in permission.group_set.all():
            group.permissions.add(target)
        for user in permission.user_set.all():
            user.user_permissions.add(target)
    old.delete()


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(content_type_adopt, migrations.RunPython.noop),
        migrations.CreateModel(
            name="OperatorAccess",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "verbose_name": "operator access",
                "verbose_name_plural": "operator access",
                "permissions": [
                    ("view_revenue", "Can see revenue, invoice, margin and cost figures"),
                    (
                        "run_operator_jobs",
                        "Can run operator jobs and syncs (re-aggregation, resync, budget check, reconciliation)",
                    ),
                    ("suspend_tenant", "Can suspend and reactivate tenants"),
                    ("manage_api_keys", "Can create, rotate and revoke tenants' API keys"),
                    ("onboard_to_stripe", "Can onboard tenants to Stripe and create meters at Stripe"),
                    ("cancel_at_stripe", "Can cancel usage reports and subscriptions at Stripe"),
                ],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
