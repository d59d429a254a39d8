from core.commands import BaseCommand
from outbound.events import ALL_EVENTS
from outbound.services import webhook_endpoint_create


def event_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    return [ALL_EVENTS if name in ("all", ALL_EVENTS) else name for name in names]


class Command(BaseCommand):
    help = (
        "Add an outgoing webhook endpoint subscribed to event types. The signing secret (whsec_...) "
        "is the last line printed, shown once."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", help="https:// URL (http:// only with WEBHOOKS_ALLOW_HTTP)")
        parser.add_argument(
            "--events",
            type=event_list,
            required=True,
            help="comma-separated event types, e.g. tenant.created,payment.failed; 'all' for every type",
        )
        parser.add_argument("--description", default="", help="what the endpoint is, for operators")

    def handle(self, *args, url, events, description, **options):
        endpoint = webhook_endpoint_create(url=url, event_types=events, description=description)
        self.stdout.write(f"webhook endpoint id: {endpoint.pk} ({endpoint.url})")
        self.stdout.write(f"events: {', '.join(endpoint.event_types)}")
        self.stdout.write("signing secret (shown once, store it now):")
        self.stdout.write(endpoint.secret)
