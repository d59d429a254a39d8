"""The operator roles' permissions: what an admin action, custom admin view or operator job needs.

The custom permissions are declared on `core.models.OperatorAccess` (a model without a
table, so that they live in one app whatever they guard); this module names them for the apps'
admins and services, and imports no model, so every app may import it. The three groups that bundle
them (Billing viewer, Billing operator, Finance) are created by console/migrations/0002_operator_roles;
docs/operations.md's "Operator roles" says what each can do.
"""

from __future__ import annotations

APP = "core"

VIEW_REVENUE = f"{APP}.view_revenue"
RUN_OPERATOR_JOBS = f"{APP}.run_operator_jobs"
SUSPEND_TENANT = f"{APP}.suspend_tenant"
MANAGE_API_KEYS = f"{APP}.manage_api_keys"
ONBOARD_TO_STRIPE = f"{APP}.onboard_to_stripe"
CANCEL_AT_STRIPE = f"{APP}.cancel_at_stripe"


def can_see_revenue(user) -> bool:
    """Revenue, invoices, estimates, AWS costs and margin: shown only to holders of view_revenue."""
    return bool(user is not None and user.is_active and user.has_perm(VIEW_REVENUE))
