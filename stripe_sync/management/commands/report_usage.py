from django.core.management.base import CommandError

from billing_platform.commands import BaseCommand
from stripe_sync.client import StripeNotConfigured
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send


class Command(BaseCommand):
    help = "Write usage reports for every changed hourly aggregate and send what is due to Stripe."

    def add_arguments(self, parser):
        parser.add_argument("--prepare-only", action="store_true", help="Write the outbox, send nothing.")

    def handle(self, *args, prepare_only=False, **options):
        prepared = usage_reports_prepare()
        self.stdout.write(
            f"prepared: {prepared.reports} reports ({prepared.units} units), {prepared.carried} carried "
            f"under one unit, {prepared.free_hours} free-plan hours, {prepared.waiting_pairs} tenant/meter "
            "pairs waiting for a Stripe customer or meter"
        )
        if prepare_only:
            return
        try:
            sent = usage_reports_send()
        except StripeNotConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"sent: {sent.sent}, failed: {sent.failed}, deferred: {sent.deferred}, calls: {sent.calls}, "
            f"429s: {sent.rate_limited}, server errors: {sent.server_errors}"
        )
        for error in sent.errors[:5]:
            self.stdout.write(f"  {error}")
        if sent.circuit_open:
            raise CommandError("the circuit breaker around Stripe is open; reports stay pending")
