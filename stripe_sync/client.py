"""The one way the platform reaches Stripe: stripe-python's `StripeClient`, configured from settings.

Every call has a timeout (STRIPE_TIMEOUT) and goes to STRIPE_API_BASE (meter events to
STRIPE_METER_EVENTS_API_BASE), so tests point the whole platform at the suite's local Stripe server.
dj-stripe uses stripe-python's module-level API; `configure_module_api()` points that at the same
place with the same key.
"""

from __future__ import annotations

import stripe
from django.conf import settings


class StripeNotConfigured(RuntimeError):
    """STRIPE_API_KEY is not set: nothing can be sent to Stripe."""

    def __init__(self):
        super().__init__("STRIPE_API_KEY is not set: set it to a Stripe secret key (sk_...) to reach Stripe")


def stripe_configured() -> bool:
    return bool(settings.STRIPE_API_KEY)


def stripe_client(*, max_network_retries: int = 0, api_key: str | None = None) -> stripe.StripeClient:
    """A `StripeClient` for the configured account (or for `api_key`, e.g. a meter event session's
    token).

    Retries are off by default: callers that retry do it themselves (the reporting sender has its
    own backoff and circuit breaker); read-only callers may ask stripe-python for a few.
    """
    api_key = api_key or settings.STRIPE_API_KEY
    if not api_key:
        raise StripeNotConfigured()
    return stripe.StripeClient(
        api_key=api_key,
        base_addresses={
            "api": settings.STRIPE_API_BASE,
            "meter_events": settings.STRIPE_METER_EVENTS_API_BASE,
        },
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT),
    )


def configure_module_api() -> None:
    """Point stripe-python's module-level API (what dj-stripe calls) at the configured Stripe."""
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.meter_events_api_base = settings.STRIPE_METER_EVENTS_API_BASE
    stripe.default_http_client = stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT)
    stripe.max_network_retries = 2
