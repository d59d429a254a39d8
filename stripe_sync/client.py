"""The one way the platform reaches Stripe: stripe-python's `StripeClient`, configured from settings.

Every call has a timeout (STRIPE_TIMEOUT) and goes to STRIPE_API_BASE (meter events to
STRIPE_METER_EVENTS_API_BASE), so tests point the whole platform at the suite's local Stripe server.
dj-stripe uses stripe-python's module-level API; `configure_module_api()` points that at the same
place with the same key.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import stripe
from django.conf import settings


class StripeNotConfigured(RuntimeError):
    """STRIPE_API_KEY is not set: nothing can be sent to Stripe."""

    def __init__(self):
        super().__init__("STRIPE_API_KEY is not set: set it to a Stripe secret key (sk_...) to reach Stripe")


# Stripe's secret and restricted keys: sk_live_..., sk_test_..., rk_live_... (ASCII letters, digits, "_").
_KEY_FORMAT = re.compile(r"[A-Za-z0-9_]{8,255}")


class StripeKeyMalformed(StripeNotConfigured):
    """STRIPE_API_KEY is set but cannot be a Stripe key (a space, a newline, a non-ASCII letter):
    refused here with one message naming the variable, before an HTTP library fails on the header.
    The key itself is never echoed."""

    def __init__(self):
        RuntimeError.__init__(
            self,
            "STRIPE_API_KEY is malformed: a Stripe secret key looks like sk_live_... or sk_test_... "
            "(letters, digits and underscores only, no spaces or line breaks); check the variable",
        )


def stripe_configured() -> bool:
    return bool(settings.STRIPE_API_KEY)


# Hosts that are this machine: a STRIPE_API_BASE there is the demo's sandbox (tests/stripe_server), never
# Stripe. `check --deploy` refuses it (stripe_sync/checks.py).
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - names compared, not bound


def is_local_address(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def stripe_is_local_sandbox() -> bool:
    """STRIPE_API_BASE points at this machine: the demo's local Stripe sandbox."""
    return is_local_address(settings.STRIPE_API_BASE)


NOT_CONFIGURED_REASON = "Stripe is not configured (STRIPE_API_KEY)"


def stripe_mode() -> str:
    """What the admin's header says about Stripe: "local sandbox (demo)", "test mode", "live" or
    NOT_CONFIGURED_REASON."""
    if not stripe_configured():
        return NOT_CONFIGURED_REASON
    if stripe_is_local_sandbox():
        return "local sandbox (demo)"
    return "live" if settings.STRIPE_LIVE_MODE else "test mode"


def stripe_client(*, max_network_retries: int = 0, api_key: str | None = None) -> stripe.StripeClient:
    """A `StripeClient` for the configured account (or for `api_key`, e.g. a meter event session's
    token).

    Retries are off by default: callers that retry do it themselves (the reporting sender has its
    own backoff and circuit breaker); read-only callers may ask stripe-python for a few.
    """
    if not api_key:
        api_key = settings.STRIPE_API_KEY
        if not api_key:
            raise StripeNotConfigured()
        if not _KEY_FORMAT.fullmatch(api_key):
            raise StripeKeyMalformed()
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
