import logging

from celery import shared_task

from stripe_sync.client import NOT_CONFIGURED_REASON, stripe_configured
from stripe_sync.sync import stripe_sync_all, tenant_stripe_sync
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@shared_task(name="stripe_sync.sync_stripe")
def sync_stripe(tenant_id: int | None = None) -> dict:
    """Mirror Stripe through dj-stripe: everything, or one tenant's customer, subscriptions, invoices."""
    if not stripe_configured():
        logger.warning("%s: skipped", NOT_CONFIGURED_REASON)
        return {"skipped": NOT_CONFIGURED_REASON}
    if tenant_id is None:
        return stripe_sync_all().as_dict()
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return {"skipped": f"no tenant {tenant_id}"}
    return tenant_stripe_sync(tenant=tenant).as_dict()
