from decimal import Decimal

from django.core.management.base import CommandError
from django.db import transaction

from core.commands import BaseCommand, decimal_argument
from tenants.models import Tenant
from tenants.services import TenantError, api_key_issue, tenant_create

_ALLOWANCE = Tenant._meta.get_field("monthly_free_allowance")


class Command(BaseCommand):
    help = "Create a tenant and its first API key. The key is the last line printed, shown once."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the tenant's display name")
        parser.add_argument("--plan", choices=Tenant.Plan.values, default=Tenant.Plan.FREE)
        parser.add_argument("--slug", help="unique slug (default: made from the name)")
        parser.add_argument(
            "--external-id",
            help="the SaaS's own id for this customer (unique; a platform key names the tenant by it)",
        )
        parser.add_argument(
            "--apigateway-key-id",
            metavar="ID",
            help="the id of the tenant's API key at AWS API Gateway (unique; kept in its plan's usage plan)",
        )
        parser.add_argument(
            "--free-allowance",
            type=decimal_argument(
                max_digits=_ALLOWANCE.max_digits, max_places=_ALLOWANCE.decimal_places, minimum=0
            ),
            default=Decimal(0),
            help="free units per meter per month",
        )
        parser.add_argument("--key-name", default="default", help="name of the first API key")

    def handle(
        self, *args, name, plan, slug, external_id, apigateway_key_id, free_allowance, key_name, **options
    ):
        try:
            with transaction.atomic():  # a tenant without its first key is not made
                tenant = tenant_create(
                    name=name,
                    plan=plan,
                    slug=slug,
                    external_id=external_id,
                    apigateway_key_id=apigateway_key_id,
                    monthly_free_allowance=free_allowance,
                )
                issued = api_key_issue(tenant=tenant, name=key_name, source="command")
        except TenantError as exc:
            raise CommandError(str(exc)) from None
        external = f", external id {tenant.external_id}" if tenant.external_id else ""
        if tenant.apigateway_key_id:
            external += f", API Gateway key {tenant.apigateway_key_id}"
        self.stdout.write(f"tenant id: {tenant.pk} (slug {tenant.slug}{external}, plan {tenant.plan})")
        self.stdout.write("API key (shown once, store it now):")
        self.stdout.write(issued.secret)
