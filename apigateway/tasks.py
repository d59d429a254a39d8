"""Celery entry points of the usage plan placement and the GetUsage import; the rows are the truth."""

from celery import shared_task

from apigateway.services import configured_usage_plans, usage_plan_place, usage_plans_sync
from apigateway.usage_import import apigateway_usage_import

# A placement that AWS throttles or fails is tried again after 30 s, 1, 2, 4, 8 and 16 minutes; after
# that the row stays failed (with its error) and the daily sync tries again.
PLACEMENT_RETRIES = 6
PLACEMENT_FIRST_DELAY_SECONDS = 30


@shared_task(name="apigateway.place_usage_plan", bind=True, max_retries=PLACEMENT_RETRIES)
def place_usage_plan(self, tenant_id: int) -> str | None:
    """Put one tenant's API Gateway key in its plan's usage plan; queued after a change commits."""
    result = usage_plan_place(tenant_id=tenant_id)
    if result is None:
        return None
    if result.retryable and self.request.retries < PLACEMENT_RETRIES:
        raise self.retry(countdown=PLACEMENT_FIRST_DELAY_SECONDS * 2**self.request.retries)
    return result.status


@shared_task(name="apigateway.sync_usage_plans")
def sync_usage_plans() -> str:
    """Daily (Celery Beat): repair drift between tenants' plans and API Gateway's usage plans."""
    if not configured_usage_plans():
        return "not configured"
    return usage_plans_sync().summary()


@shared_task(name="apigateway.import_usage")
def import_usage() -> str:
    """Hourly (Celery Beat): API Gateway's daily request counts as usage events (today and yesterday)."""
    from django.conf import settings

    if not configured_usage_plans() or not settings.APIGATEWAY_USAGE_METER:
        return "not configured"
    return apigateway_usage_import().summary()
