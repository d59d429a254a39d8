"""System checks of the Stripe settings (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from stripe_sync.client import stripe_is_local_sandbox


@register(Tags.security, deploy=True)
def stripe_api_base_check(app_configs, **kwargs):
    """A deployment never reaches Stripe through this machine: a local STRIPE_API_BASE is the demo's
    sandbox (scripts/run-demo.sh), whose customers, payments and invoices are not real."""
    if stripe_is_local_sandbox():
        return [
            Error(
                f"STRIPE_API_BASE is {settings.STRIPE_API_BASE}, a local Stripe sandbox (the demo's); "
                "a deployment must reach Stripe itself",
                hint="unset STRIPE_API_BASE (Stripe's https://api.stripe.com is the default)",
                id="stripe_sync.E001",
            )
        ]
    return []
