"""Processing of stored Stripe events (queued by the webhook view after commit)."""

from celery import shared_task

from stripe_sync.webhooks import webhook_event_process, webhook_events_requeue_stale


@shared_task(
    name="stripe_sync.process_stripe_event",
    autoretry_for=(Exception,),
    retry_backoff=5,  # 5, 10, 20, 40, 80 s (with jitter), well inside the broker's visibility timeout
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=5,
)
def process_stripe_event(event_id: int) -> str | None:
    """Process one stored event; a failure is on the row (status failed) and retried with backoff."""
    event = webhook_event_process(event_id=event_id)
    return event.status if event is not None else None


@shared_task(name="stripe_sync.requeue_stale_webhook_events")
def requeue_stale_webhook_events() -> int:
    """Every 10 minutes (Celery Beat): queue again events whose processing task was lost."""
    return webhook_events_requeue_stale()
