from datetime import timedelta

from django.core.management.base import CommandError

from core.commands import BaseCommand, int_argument
from metering.aggregation import usage_events_prune


class Command(BaseCommand):
    help = "Delete raw usage events older than N days whose hours are aggregated (aggregates stay)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than-days",
            type=int_argument(minimum=1, maximum=36500),
            default=45,
            help="at least 36 (default 45)",
        )

    def handle(self, *args, older_than_days, **options):
        try:
            result = usage_events_prune(older_than=timedelta(days=older_than_days))
        except ValueError as exc:
            raise CommandError(f"--older-than-days {older_than_days}: {exc}") from None
        self.stdout.write(
            f"deleted {result.deleted} event(s) received before {result.cutoff:%Y-%m-%d %H:%M}Z"
        )
