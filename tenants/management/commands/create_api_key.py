from django.core.management.base import CommandError

from core.commands import BaseCommand
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref
from tenants.services import TenantError, api_key_issue


class Command(BaseCommand):
    help = "Create another API key for a tenant. The key is the last line printed, shown once."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant slug or id")
        parser.add_argument("--name", default="cli", help="a name for the key (max 50 characters)")

    def handle(self, *args, tenant, name, **options):
        try:
            found = tenant_get_by_ref(ref=tenant)
            issued = api_key_issue(tenant=found, name=name, source="command")
        except (Tenant.DoesNotExist, TenantError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"tenant id: {found.pk} (slug {found.slug}); key prefix {issued.api_key.prefix}")
        self.stdout.write("API key (shown once, store it now):")
        self.stdout.write(issued.secret)
