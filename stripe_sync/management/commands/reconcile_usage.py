from datetime import UTC, datetime, time

from django.core.management.base import CommandError

from core.commands import BaseCommand, date_argument
from stripe_sync.client import StripeNotConfigured, stripe_configured
from stripe_sync.reconciliation import usage_reconcile


def _number(value) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class Command(BaseCommand):
    help = "Compare local aggregates, what was sent and Stripe's meter event summaries now."

    def add_arguments(self, parser):
        parser.add_argument(
            "--since", type=date_argument, help="First day (UTC) to check; default 35 days ago."
        )
        parser.add_argument("--no-resend", action="store_true", help="List differences, re-send nothing.")

    def handle(self, *args, since=None, no_resend=False, **options):
        start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
        if not stripe_configured():
            raise CommandError(str(StripeNotConfigured()))
        run = usage_reconcile(trigger="command", since=start, resend=not no_resend)
        self.stdout.write(
            f"reconciliation {run.pk}: {run.status}, {run.hours_checked} hours checked, "
            f"{run.differences} differences, {run.resent} reports re-sent, {run.stripe_calls} Stripe calls"
        )
        for item in run.items.select_related("tenant", "meter")[:20]:
            self.stdout.write(
                f"  {item.hour:%Y-%m-%d %H}:00 {item.tenant.slug} {item.meter.code}: "
                f"{item.get_kind_display()} (local {_number(item.local_quantity)}, sent {item.sent_value}, "
                f"Stripe {_number(item.stripe_value)}) {item.resolution}"
            )
        if run.status != "succeeded":
            raise CommandError(f"reconciliation failed: {run.error}")
