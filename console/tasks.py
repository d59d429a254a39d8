"""The platform's own Celery tasks, found by Celery's autodiscovery of `<app>.tasks`."""

from celery import shared_task

# Defined beside the service it runs; imported here so that a worker registers it.
from console.operator_jobs import run_operator_job  # noqa: F401
from console.reports import daily_report_send
from core.parsing import parse_date


@shared_task(name="billing_platform.send_daily_report")
def send_daily_report(day: str | None = None) -> dict:
    """Daily (Celery Beat, 07:00 UTC): e-mail yesterday's report to OPERATOR_EMAILS, once per day."""
    return daily_report_send(day=parse_date(day) if day else None).as_dict()
