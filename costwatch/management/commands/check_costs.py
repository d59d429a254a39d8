import argparse
from datetime import date

from django.core.management.base import CommandError

from billing_platform.commands import BaseCommand
from costwatch.models import CostCheckRun
from costwatch.services import cost_check_run


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        # Inside argparse: its own error type gives the one-line "error: argument --date: ..." exit 2.
        raise argparse.ArgumentTypeError(f"must be a date such as 2026-11-20, got {value!r}") from None


class Command(BaseCommand):
    help = "The daily Cost Explorer budget check (what the 06:00 UTC task runs), for one UTC day."

    def add_arguments(self, parser):
        parser.add_argument("--date", type=_date, help="the UTC day to check (default: yesterday)")

    def handle(self, *args, date, **options):
        run = cost_check_run(day=date, trigger="command")
        if run.status == CostCheckRun.Status.FAILED:
            raise CommandError(f"cost check failed: {run.error.strip().splitlines()[-1]} (run {run.pk})")
        self.stdout.write(run.summary)
        if run.status == CostCheckRun.Status.PARTIAL:
            raise CommandError(f"{run.error} (run {run.pk})")
