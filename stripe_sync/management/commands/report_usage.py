from django.core.management.base import CommandError

from core.commands import BaseCommand
from stripe_sync.client import StripeNotConfigured
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send


class Command(BaseCommand):
    help = "Write usage reports for every changed hourly aggregate and send what is due to Stripe."

    def add_arguments(self, parser):
        parser.add_argument("--prepare-only", action="store_true", help="Write the outbox, send nothing.")

    def handle(self, *args, prepare_only=False, **options):
        failure = None
        try:
            prepared = usage_reports_prepare()
        except Exception as error:  # noqa: BLE001 (reported; what is in the outbox is still sent)
            failure = f"preparing failed: {type(error).__name__}: {error}"
            self.stderr.write(failure)
        else:
            self.stdout.write(
                f"prepared: {prepared.reports} reports ({prepared.units} units), {prepared.carried} "
                f"carried under one unit, {prepared.free_hours} free-plan hours, {prepared.waiting_pairs} "
                f"tenant/meter pairs waiting for a Stripe customer or meter, {prepared.failed_pairs} failed"
            )
            for error in (prepared.errors or [])[:5]:
                self.stdout.write(f"  {error}")
        if prepare_only:
            if failure:
                raise CommandError(failure)
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
        if failure:
            raise CommandError(failure)
