from decimal import Decimal

from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.core.management.base import CommandError

from billing_platform.celery import worker_check
from core.commands import BaseCommand, decimal_argument


class Command(BaseCommand):
    help = "Send a task through the broker and wait for a worker to run it against the database."

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout",
            type=decimal_argument(max_digits=7, max_places=3, minimum=Decimal("0.001"), maximum=3600),
            default=Decimal(10),
            help="seconds to wait (at most 3600)",
        )

    def handle(self, *args, timeout, **options):
        if not settings.REDIS_URL:
            raise CommandError("REDIS_URL is not set: the embedded demo has no result backend to wait on")
        try:
            result = worker_check.apply_async().get(timeout=float(timeout))
        except CeleryTimeoutError:
            raise CommandError(f"no worker ran the check within {timeout:g}s") from None
        except OSError as exc:
            raise CommandError(f"cannot reach the broker at REDIS_URL: {exc}") from None
        self.stdout.write(
            f"worker {result['hostname']} (pid {result['pid']}) ran the check on {result['database']}"
        )
