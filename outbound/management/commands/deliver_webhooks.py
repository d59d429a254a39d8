from core.commands import BaseCommand, int_argument
from outbound.services import SWEEP_BATCH, webhook_deliveries_send_due


class Command(BaseCommand):
    help = (
        "Send the outgoing webhook deliveries that are due now (what the every-minute Beat task does); "
        "--all also sends retries not due yet. Deliveries of disabled endpoints are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all",
            dest="include_not_due",
            action="store_true",
            help="also send deliveries whose retry is not due yet",
        )
        parser.add_argument(
            "--limit",
            type=int_argument(minimum=1, maximum=100_000),
            default=SWEEP_BATCH,
            help=f"at most this many deliveries (default {SWEEP_BATCH})",
        )

    def handle(self, *args, include_not_due, limit, **options):
        result = webhook_deliveries_send_due(include_not_due=include_not_due, limit=limit)
        self.stdout.write(f"sent {result.sent}: {result.succeeded} succeeded, {result.failed} failed")
