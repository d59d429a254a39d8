from django.core.management.base import CommandError

from core.commands import BaseCommand
from stripe_sync.catalog import OnboardingError
from stripe_sync.client import StripeNotConfigured
from stripe_sync.onboarding import tenant_link, tenant_onboard
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref


class Command(BaseCommand):
    help = (
        "Onboard a tenant to Stripe: find or create its customer (never two), make every meter's "
        "billing meter and metered price, and a metered tenant's subscription. With --customer, link "
        "a customer (and --subscription) made at Stripe instead, after checking them there."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant slug or id")
        parser.add_argument("--customer", help="an existing Stripe customer id (cus_...) to link")
        parser.add_argument("--subscription", help="its existing metered subscription (sub_...) to link")

    def handle(self, *args, tenant, customer=None, subscription=None, **options):
        if subscription and not customer:
            raise CommandError("--subscription needs --customer")
        try:
            found = tenant_get_by_ref(ref=tenant)
            if customer:
                result = tenant_link(tenant=found, customer_id=customer, subscription_id=subscription)
            else:
                result = tenant_onboard(tenant=found)
        except (Tenant.DoesNotExist, OnboardingError, StripeNotConfigured) as exc:
            raise CommandError(str(exc)) from None
        # Stripe's own errors (a refused STRIPE_API_KEY included) become one line in BaseCommand.
        for line in result.lines():
            self.stdout.write(line)
