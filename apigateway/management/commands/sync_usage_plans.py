from django.core.management.base import CommandError

from apigateway.services import UsagePlansNotConfigured, usage_plans_sync
from core.aws import AwsError
from core.commands import BaseCommand
from tenants.models import Tenant
from tenants.selectors import tenant_by_api_ref


class Command(BaseCommand):
    help = (
        "Put every tenant's API Gateway key (or one tenant's) in exactly the usage plan of its plan "
        "(suspended: none), as the daily task does; prints each move. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="REF", help="only this tenant (external id or slug)")
        parser.add_argument("--dry-run", action="store_true", help="say what would move; move nothing")

    def handle(self, *args, tenant, dry_run, **options):
        found = None
        if tenant is not None:
            try:
                found = tenant_by_api_ref(ref=tenant)
            except Tenant.DoesNotExist as exc:
                raise CommandError(str(exc)) from None
            if not found.apigateway_key_id and not hasattr(found, "usage_plan_placement"):
                raise CommandError(f"tenant {found.slug} has no API Gateway key id")
        try:
            result = usage_plans_sync(tenant=found, dry_run=dry_run)
        except (UsagePlansNotConfigured, AwsError) as exc:  # AWS unreachable, no credentials, denied
            raise CommandError(str(exc)) from None
        for line in result.lines:
            self.stdout.write(line)
        self.stdout.write(result.summary(dry_run=dry_run))
        if result.failed:
            raise CommandError(f"{result.failed} placement(s) failed (kept on their rows; retried daily)")
