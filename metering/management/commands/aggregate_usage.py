from django.core.management.base import CommandError

from core.commands import BaseCommand, datetime_argument, int_argument
from metering.aggregation import (
    recompute_horizon,
    recompute_window_start,
    usage_aggregate,
    usage_mark_for_recompute,
)
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref


class Command(BaseCommand):
    help = "Aggregate every hour that received events since the last run (what the hourly task does)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--full",
            action="store_true",
            help="recompute every hour that has events (since --since, default 35 days back)",
        )
        parser.add_argument("--since", type=datetime_argument, help="with --full: from this date/time (UTC)")
        parser.add_argument("--tenant", help="with --full: only this tenant (slug or id)")
        parser.add_argument(
            "--batch-size",
            type=int_argument(minimum=1, maximum=100_000),
            default=500,
            help="pending hours per transaction",
        )

    def handle(self, *args, full, since, tenant, batch_size, **options):
        if (since or tenant) and not full:
            raise CommandError("--since and --tenant only apply with --full")
        if full:
            try:
                tenant_id = tenant_get_by_ref(ref=tenant).pk if tenant else None
            except Tenant.DoesNotExist as exc:
                raise CommandError(str(exc)) from None
            horizon = recompute_horizon()
            # By default, every reportable hour whose raw events are all still kept.
            since = since or max(recompute_window_start(), horizon)
            if since < horizon:
                raise CommandError(
                    f"--since {since:%Y-%m-%d %H:%M}Z is before {horizon:%Y-%m-%d %H:%M}Z: raw events "
                    "of earlier hours are past retention or pruned, and recomputing an hour from what "
                    f"is left would lower its aggregate. Use --since {horizon:%Y-%m-%dT%H:%M}Z or later."
                )
            result = usage_mark_for_recompute(since=since, tenant_id=tenant_id)
            self.stdout.write(f"marked {result.marked} hour(s) for recompute since {since:%Y-%m-%d %H:%M}Z")
        run = usage_aggregate(trigger="command", batch_size=batch_size)
        seconds = run.duration.total_seconds()
        self.stdout.write(
            f"aggregated {run.hours_aggregated} hour(s), {run.hours_changed} changed, in {seconds:.2f}s"
        )
