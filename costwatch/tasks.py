from celery import shared_task

from costwatch.services import cost_check_run, run_totals


@shared_task(name="costwatch.check_costs")
def check_costs() -> dict:
    """Daily (Celery Beat, 06:00 UTC): the Cost Explorer budget check of yesterday."""
    return run_totals(cost_check_run(trigger="beat"))
