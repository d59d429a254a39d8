from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.core.management.base import CommandError

from billing_platform.celery import worker_check
from billing_platform.commands import BaseCommand


class Command(BaseCommand):
    help = "Send a task through the broker and wait for a worker to run it against the database."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")

    def handle(self, *args, timeout, **options):
        if not settings.REDIS_URL:
            raise CommandError("REDIS_URL is not set: the embedded demo has no result backend to wait on")
        try:
            result = worker_check.apply_async().get(timeout=timeout)
        except CeleryTimeoutError:
            raise CommandError(f"no worker ran the check within {timeout:g}s") from None
        except OSError as exc:
            raise CommandError(f"cannot reach the broker at REDIS_URL: {exc}") from None
        self.stdout.write(
            f"worker {result['hostname']} (pid {result['pid']}) ran the check on {result['database']}"
        )
