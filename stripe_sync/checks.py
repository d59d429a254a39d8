"""System checks of the Stripe settings (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from stripe_sync.client import is_local_address


@register(Tags.security, deploy=True)
def stripe_api_base_check(app_configs, **kwargs):
    """A deployment never reaches Stripe through this machine: a local STRIPE_API_BASE is the demo's
    sandbox (scripts/run-demo.sh), whose customers, payments and invoices are not real."""
    return [
        Error(
            f"{name} is {getattr(settings, name)}, a local Stripe sandbox (the demo's); a deployment must "
            "reach Stripe itself",
            hint=f"unset {name} (Stripe's own address is the default)",
            id="stripe_sync.E001",
        )
        for name in ("STRIPE_API_BASE", "STRIPE_METER_EVENTS_API_BASE")
        if is_local_address(getattr(settings, name))
    ]
