from django.core.management.base import CommandError

from apigateway.services import UsagePlansNotConfigured
from apigateway.usage_import import DEFAULT_DAYS, MAX_DAYS, UsageImportNotConfigured, apigateway_usage_import
from core.aws import AwsError
from core.commands import BaseCommand, int_argument


class Command(BaseCommand):
    help = (
        "Import API Gateway's daily request counts per key (GetUsage, every configured usage plan) as "
        "usage events of APIGATEWAY_USAGE_METER, as the hourly task does. Idempotent per (key, day); "
        "a day that AWS revised upwards adds the difference."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int_argument(minimum=1, maximum=MAX_DAYS),
            default=DEFAULT_DAYS,
            help=f"the last N days, today (UTC) included (default {DEFAULT_DAYS}, at most {MAX_DAYS})",
        )

    def handle(self, *args, days, **options):
        try:
            result = apigateway_usage_import(days=days)
        except (UsagePlansNotConfigured, UsageImportNotConfigured, AwsError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(result.summary())
