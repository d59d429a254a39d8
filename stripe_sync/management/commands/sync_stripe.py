from django.core.management.base import CommandError

from core.commands import BaseCommand
from stripe_sync.client import StripeNotConfigured
from stripe_sync.sync import stripe_sync_all, tenant_stripe_sync
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref


class Command(BaseCommand):
    help = (
        "Mirror Stripe's products, prices, customers, subscriptions and invoices into dj-stripe's "
        "tables (all pages); --tenant: only that tenant's customer, subscriptions and invoices."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="tenant slug or id")

    def handle(self, *args, tenant=None, **options):
        try:
            if tenant is None:
                result = stripe_sync_all()
            else:
                found = tenant_get_by_ref(ref=tenant)
                if not found.stripe_customer_id:
                    raise CommandError(
                        f"tenant {found.slug} has no Stripe customer; run onboard_tenant first"
                    )
                result = tenant_stripe_sync(tenant=found)
        except (Tenant.DoesNotExist, StripeNotConfigured) as exc:
            raise CommandError(str(exc)) from None
        # Stripe's own errors (a refused STRIPE_API_KEY included) become one line in BaseCommand.
        self.stdout.write(f"mirrored {result.summary()}")
        for error in result.errors:
            self.stdout.write(f"  failed {error}")
        if result.failed:
            raise CommandError(f"{result.failed} object(s) could not be mirrored")
