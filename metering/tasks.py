from celery import shared_task

from metering.aggregation import usage_aggregate


@shared_task(name="metering.aggregate_usage")
def aggregate_usage() -> dict:
    """Hourly (Celery Beat): aggregate every hour that received events since the last run."""
    run = usage_aggregate(trigger="beat")
    return {"run": run.pk, "hours_aggregated": run.hours_aggregated, "hours_changed": run.hours_changed}
