from django.core.management.base import CommandError

from core.commands import BaseCommand, date_argument
from costwatch.models import CostCheckRun
from costwatch.services import cost_check_run


class Command(BaseCommand):
    help = "The daily Cost Explorer budget check (what the 06:00 UTC task runs), for one UTC day."

    def add_arguments(self, parser):
        parser.add_argument("--date", type=date_argument, help="the UTC day to check (default: yesterday)")

    def handle(self, *args, date, **options):
        run = cost_check_run(day=date, trigger="command")
        if run.status == CostCheckRun.Status.FAILED:
            raise CommandError(f"cost check failed: {run.error.strip().splitlines()[-1]} (run {run.pk})")
        self.stdout.write(run.summary)
        if run.status == CostCheckRun.Status.PARTIAL:
            raise CommandError(f"{run.error} (run {run.pk})")
