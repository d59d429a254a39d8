"""Process a saved Stripe event (JSON, as delivered or as `stripe events retrieve` prints it) now.

For debugging: the event is stored in the webhook inbox if it is new (no signature is checked:
the file is the operator's own, and processing re-fetches every object from Stripe anyway) and
processed synchronously, in this process, exactly as the worker would.
"""

from pathlib import Path

from django.core.management.base import CommandError

from core.commands import BaseCommand
from stripe_sync.client import StripeNotConfigured
from stripe_sync.models import WebhookEvent
from stripe_sync.webhooks import (
    WebhookRejected,
    webhook_event_process,
    webhook_event_receive,
    webhook_payload_parse,
)


class Command(BaseCommand):
    help = "Store (if new) and process a saved Stripe event JSON file synchronously; print the outcome."

    def add_arguments(self, parser):
        parser.add_argument("file", help="A Stripe event as JSON (snapshot event or v2 thin notification).")
        parser.add_argument(
            "--replay",
            action="store_true",
            help="Process the event again even if it was already processed or ignored.",
        )

    def handle(self, *args, file, replay, **options):
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        try:
            payload = webhook_payload_parse(text=text)
        except WebhookRejected as exc:
            raise CommandError(f"{file}: {exc.message}") from None

        received = webhook_event_receive(payload=payload, enqueue=False)
        event = received.event
        self.stdout.write(
            f"{event.stripe_id} {event.type}: {'stored' if received.created else 'already stored'}"
        )
        if event.is_final and not replay:
            self.stdout.write(
                f"{event.stripe_id}: already {event.status} ({event.result}); --replay to run again"
            )
            return
        if event.is_final:
            WebhookEvent.objects.filter(pk=event.pk).update(status=WebhookEvent.Status.RECEIVED)
        try:
            event = webhook_event_process(event_id=event.pk)
        except StripeNotConfigured as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - one line for the operator; the traceback is on the row
            raise CommandError(
                f"{payload['id']}: failed: {type(exc).__name__}: {exc} (traceback on the event in admin)"
            ) from None
        self.stdout.write(f"{event.stripe_id}: {event.status} - {event.result}")
