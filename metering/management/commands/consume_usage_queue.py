from django.core.management.base import CommandError

from core.aws import AwsError
from core.commands import BaseCommand, int_argument
from metering.eventbus import MAX_WAIT_SECONDS, UsageQueueError, queue_url_check, usage_queue_consume
from metering.models import Meter, UsageQueue


class Command(BaseCommand):
    help = (
        "Consume seed 000's BILLING and ONBOARD events from an SQS queue (EventBridge, SNS or raw "
        "messages) into a meter, until the queue is empty: what the periodic task does for each "
        "configured queue. Messages that cannot be processed stay in the queue for its redrive."
    )

    def add_arguments(self, parser):
        parser.add_argument("queue_url", metavar="QUEUE_URL", help="the SQS queue URL")
        parser.add_argument("--meter", required=True, help="the code of the meter BILLING events go to")
        parser.add_argument("--once", action="store_true", help="one receive (up to 10 messages), then stop")
        parser.add_argument(
            "--max-messages",
            type=int_argument(minimum=1, maximum=1_000_000),
            default=1000,
            help="stop after receiving this many messages (default 1000)",
        )
        parser.add_argument(
            "--wait",
            type=int_argument(minimum=0, maximum=MAX_WAIT_SECONDS),
            default=10,
            help="seconds each receive long-polls an empty queue (0-20, default 10)",
        )
        parser.add_argument(
            "--visibility-timeout",
            type=int_argument(minimum=0, maximum=43200),
            help="seconds a received message stays hidden while it is processed (default: the queue's)",
        )

    def handle(self, *args, queue_url, meter, once, max_messages, wait, visibility_timeout, **options):
        found = Meter.objects.filter(code=meter).first()
        if found is None:
            known = ", ".join(Meter.objects.values_list("code", flat=True)[:20]) or "none yet"
            raise CommandError(f"unknown meter {meter[:100]!r} (meters: {known})")
        try:
            url = queue_url_check(queue_url)
            configured = UsageQueue.objects.filter(url=url).first()
            result = usage_queue_consume(
                url=url,
                meter=found,
                max_messages=max_messages,
                wait_seconds=wait,
                once=once,
                visibility_timeout=visibility_timeout,
                queue=configured,
            )
        except (UsageQueueError, AwsError) as exc:  # no such queue; no credentials, access denied, ...
            raise CommandError(str(exc)) from None
        # AWS's other errors (botocore's ClientError) become one line in BaseCommand.
        if result.last_error:
            self.stderr.write(f"last failure: {result.last_error}")
        self.stdout.write(result.summary())
