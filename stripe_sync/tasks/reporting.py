import logging

from celery import shared_task

from stripe_sync.client import NOT_CONFIGURED_REASON, StripeNotConfigured, stripe_configured
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import usage_reports_prepare, usage_unsent_near_edge
from stripe_sync.sender import usage_reports_send

logger = logging.getLogger(__name__)


@shared_task(name="stripe_sync.report_usage")
def report_usage() -> dict:
    """Hourly (Celery Beat, after aggregation): write the outbox, then send what is due.

    The send step runs even when preparing failed: rows already in the outbox (other tenants'
    too) must not wait for a problem in preparation."""
    try:
        prepared = usage_reports_prepare().__dict__
    except Exception as error:
        logger.exception("preparing usage reports failed; sending what is already in the outbox")
        prepared = {"error": f"{type(error).__name__}: {error}"}
    at_risk, oldest = usage_unsent_near_edge()
    if at_risk:
        logger.warning(
            "%d hour(s) of unsent usage are close to Stripe's 35-day window (oldest %s)", at_risk, oldest
        )
    if not stripe_configured():
        # A platform not yet connected to Stripe: the outbox keeps the reports; one line, no traceback.
        logger.warning("%s: skipped sending usage reports (the outbox keeps them)", NOT_CONFIGURED_REASON)
        return {"prepared": prepared, "sent": None, "reason": str(StripeNotConfigured())}
    sent = usage_reports_send()
    return {"prepared": prepared, "sent": sent.as_dict(), "near_edge": at_risk}


@shared_task(name="stripe_sync.reconcile_usage")
def reconcile_usage(trigger: str = "beat") -> dict:
    """Nightly (Celery Beat) and on demand from admin: compare local, sent and Stripe's summaries.

    Without STRIPE_API_KEY there is nothing to compare with: one line in the log, no run recorded."""
    if not stripe_configured():
        logger.warning("%s: skipped", NOT_CONFIGURED_REASON)
        return {"skipped": NOT_CONFIGURED_REASON}
    run = usage_reconcile(trigger=trigger)
    return {"run": run.pk, "status": run.status, "differences": run.differences, "resent": run.resent}
