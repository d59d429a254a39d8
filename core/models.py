"""The ground floor's one model: the holder of the operator roles' permissions."""

from django.db import models


class OperatorAccess(models.Model):
    """No table: the holder of the operator roles' own permissions (core.permissions),
    which guard admin actions, custom admin views and operator jobs of every app."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "operator access"
        verbose_name_plural = "operator access"
        permissions = [
            ("view_revenue", "Can see revenue, invoice, margin and cost figures"),
            (
                "run_operator_jobs",
                "Can run operator jobs and syncs (re-aggregation, resync, budget check, reconciliation)",
            ),
            ("suspend_tenant", "Can suspend and reactivate tenants"),
            ("manage_api_keys", "Can create, rotate and revoke tenants' API keys"),
            ("onboard_to_stripe", "Can onboard tenants to Stripe and create meters at Stripe"),
            ("cancel_at_stripe", "Can cancel usage reports and subscriptions at Stripe"),
        ]

    def __str__(self) -> str:
        return "operator access"
