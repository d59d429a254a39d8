from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from metering.aggregation import usage_aggregate, usage_events_prune
from metering.eventbus import usage_queues_consume
from metering.eventstore import event_store


@shared_task(name="metering.aggregate_usage")
def aggregate_usage() -> dict:
    """Hourly (Celery Beat): aggregate every hour that received events since the last run."""
    run = usage_aggregate(trigger="beat")
    return {"run": run.pk, "hours_aggregated": run.hours_aggregated, "hours_changed": run.hours_changed}


@shared_task(name="metering.prune_usage_events")
def prune_usage_events(older_than_days: int = 45) -> dict:
    """Daily (Celery Beat): drop raw events past the retention window; aggregates stay."""
    result = usage_events_prune(older_than=timedelta(days=older_than_days))
    return {"deleted": result.deleted, "cutoff": result.cutoff.isoformat()}


@shared_task(name="metering.maintain_event_store")
def maintain_event_store() -> dict:
    """Hourly (Celery Beat): create the coming days' raw-event partitions and drop idempotency key
    generations no check reads any more (PostgreSQL; nothing to do on SQLite)."""
    return event_store().maintain(now=timezone.now())


@shared_task(name="metering.consume_usage_queues")
def consume_usage_queues(max_messages: int = 1000, wait_seconds: int = 5) -> dict:
    """Every minute (Celery Beat): consume every enabled usage queue (SQS) into its meter."""
    return usage_queues_consume(max_messages=max_messages, wait_seconds=wait_seconds)
