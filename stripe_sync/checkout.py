"""Checkout: a Stripe-hosted page where a tenant adds a card and starts its metered subscription.

mode=subscription with the meters' metered prices: Stripe collects the card, makes it the
subscription's default payment method and starts the subscription in one step, and
`tenant_subscription_ensure` later adopts that subscription rather than making another. (mode=setup
would only save a card, leaving it to be made the default and the subscription to be started by
us afterwards.) A tenant that already has a live metered subscription is refused: a second one
would bill the same meter events twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from stripe_sync.catalog import OnboardingError, metered_prices, meters_ensure
from stripe_sync.client import stripe_client
from stripe_sync.onboarding import tenant_customer_ensure
from stripe_sync.subscriptions import live_metered_subscriptions
from tenants.models import Tenant


class AlreadySubscribed(Exception):
    def __init__(self, subscription_id: str):
        super().__init__(f"the tenant already has a metered subscription ({subscription_id})")
        self.subscription_id = subscription_id


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


# scheme "://" authority [path-query-fragment]. The authority ends at the first "/", "?", "#" or
# a backslash (a browser reads it as "/" in http(s) URLs, so `http://evil.com\@localhost/`
# goes to evil.com while urlsplit sees localhost).
_RETURN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#\\]*)(?P<rest>.*)", re.S)
# What a host and port may be made of once userinfo, percent-escapes and other characters that
# browsers and Python read differently are refused: a name, an IPv4 address or an [IPv6] literal.
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
MAX_RETURN_URL_LENGTH = 2000


def return_url_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why `url` may not be a Checkout return URL, or None when it is an http(s) URL on an allowed
    host (Django's ALLOWED_HOSTS syntax: `.example.com` allows its subdomains).

    Checkout sends the tenant's user to this URL, so what counts is where a *browser* goes. The
    check reads the URL as the WHATWG URL standard does for http(s) and refuses every form where
    it and Python's urlsplit could disagree: a backslash anywhere, "@" (userinfo), "%" (encoded
    delimiters), spaces and control characters, non-ASCII, and anything but `//` after the scheme.
    """
    if len(url) > MAX_RETURN_URL_LENGTH:
        return f"must be at most {MAX_RETURN_URL_LENGTH} characters"
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "must be plain ASCII without spaces or control characters (percent-encode them)"
    if "\\" in url:
        return "must not contain a backslash (browsers read it as /)"
    match = _RETURN_URL.fullmatch(url)
    if match is None:
        return 'must be an absolute http or https URL starting with "http://" or "https://"'
    if match["scheme"].lower() not in ("http", "https"):
        return "must be an http or https URL"
    authority = match["authority"]
    if "@" in authority:
        return "must not contain user information (@) before the host"
    if "%" in authority:
        return "must not contain percent-encoded characters in the host"
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None or (host_port["port"] is not None and int(host_port["port"]) > 65535):
        return "must have a valid host name and port"
    host = host_port["host"].lower()
    # The same host as Python's parser sees it, or the URL is ambiguous.
    try:
        parsed = urlsplit(url)
        python_host = (parsed.hostname or "").lower()
        parsed.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError:
        return "must have a valid host name and port"
    if python_host != host.strip("[]"):
        return "must name its host unambiguously"
    if not validate_host(host, allowed_hosts):
        return f"the host {host!r} is not allowed (CHECKOUT_ALLOWED_HOSTS)"
    return None


def checkout_session_create(*, tenant: Tenant, success_url: str, cancel_url: str) -> CheckoutSession:
    """A Checkout Session for `tenant`'s metered subscription (its customer onboarded first)."""
    tenant_customer_ensure(tenant=tenant)
    prices = metered_prices()
    if not prices:
        meters_ensure()
        prices = metered_prices()
    if not prices:
        raise OnboardingError("no meter has a metered price: billing is not set up")
    client = stripe_client(max_network_retries=2)
    live = live_metered_subscriptions(client, tenant.stripe_customer_id, prices)
    if live:
        raise AlreadySubscribed(live[0].id)
    metadata = {"tenant_id": str(tenant.pk), "tenant_slug": tenant.slug}
    params = {
        "mode": "subscription",
        "customer": tenant.stripe_customer_id,
        # Metered prices take no quantity: usage comes from meter events.
        "line_items": [{"price": price_id} for price_id in sorted(prices.values())],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": str(tenant.pk),
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
    }
    if settings.CHECKOUT_PROMOTION_CODES:
        # The promotion code field on the Checkout page; the codes themselves are made in Stripe.
        params["allow_promotion_codes"] = True
    session = client.v1.checkout.sessions.create(params=params)
    return CheckoutSession(id=session.id, url=session.url)
