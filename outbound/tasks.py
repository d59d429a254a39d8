"""Celery entry points of outgoing webhooks; the rows, not the broker, are the truth."""

from celery import shared_task

from outbound.services import webhook_deliveries_send_due, webhook_delivery_send

SWEEP_SECONDS = 50


@shared_task(name="outbound.deliver_webhook")
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt of one delivery, queued after commit; a no-op if it is not due or already taken."""
    delivery = webhook_delivery_send(delivery_id=delivery_id)
    return delivery.status if delivery is not None else None


@shared_task(name="outbound.deliver_due_webhooks")
def deliver_due_webhooks() -> int:
    """Every minute (Celery Beat): send due deliveries, including retries and any whose task was lost."""
    # Within the minute: slow endpoints cannot make sweeps pile up; the rest is due next time.
    return webhook_deliveries_send_due(seconds=SWEEP_SECONDS).sent
