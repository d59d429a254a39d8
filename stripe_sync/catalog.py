"""The platform's catalogue at Stripe: for each local Meter, a billing meter and a metered price.

Meter events carry `{"stripe_customer_id": ..., "value": ...}` (the reporting sender writes exactly
these keys), each one the change of an hour's aggregate, so Stripe's meter sums them. The metered
price is built from the meter's metered-plan `metering.Price`:
https://docs.stripe.com/billing/subscriptions/usage-based/pricing-models

Everything is found before it is created (billing meters by event name, prices by lookup key:
neither depends on Stripe's search index, which lags), and every create carries a deterministic
Idempotency-Key, so two operators or a retry after a crash never make two.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from decimal import Decimal

import stripe
from django.db import transaction
from django.utils import timezone

from core.money import plain_decimal
from metering.models import Meter, Price
from metering.pricing import PricingError, price_tiers_validate
from stripe_sync.client import stripe_client
from stripe_sync.mirror import mirror_price
from stripe_sync.models import StripeMeter
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# The meter event payload keys the reporting sender uses; a billing meter with other keys would
# refuse every event, so an existing one is checked, never silently accepted.
CUSTOMER_PAYLOAD_KEY = "stripe_customer_id"
VALUE_PAYLOAD_KEY = "value"
LOOKUP_KEY_PREFIX = "metered:"
# Metadata on the Stripe objects the platform makes, so an operator can tell them apart.
META_METER_CODE = "platform_meter_code"


class OnboardingError(Exception):
    """A Stripe set-up request that cannot be carried out; the message is for the operator."""


def stripe_error_message(exc: stripe.StripeError) -> str:
    """One line for an operator or an API client: Stripe's own message, code and status."""
    message = exc.user_message or str(exc) or type(exc).__name__
    details = ", ".join(
        str(part) for part in (exc.code, exc.http_status and f"HTTP {exc.http_status}") if part
    )
    if isinstance(exc, stripe.APIConnectionError):
        details = "no answer"
    return f"Stripe: {message.strip()}" + (f" ({details})" if details else "")


@dataclass(frozen=True)
class MeterSyncResult:
    stripe_meter: StripeMeter
    meter_created: bool
    price_created: bool
    note: str = ""  # e.g. why no price was made

    def describe(self) -> str:
        parts = [
            f"{self.stripe_meter.event_name}: meter {self.stripe_meter.stripe_meter_id}"
            + (" (created)" if self.meter_created else ""),
        ]
        if self.stripe_meter.stripe_price_id:
            parts.append(
                f"price {self.stripe_meter.stripe_price_id}" + (" (created)" if self.price_created else "")
            )
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)


def _key(*parts: object) -> str:
    return "-".join(str(part) for part in parts)


def idempotency_digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def lookup_key_for(meter: Meter) -> str:
    return f"{LOOKUP_KEY_PREFIX}{meter.code}"


def _billing_meter_find(client: stripe.StripeClient, event_name: str):
    for candidate in client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter():
        if candidate.event_name == event_name:
            return candidate
    return None


def _billing_meter_check(billing_meter, event_name: str) -> None:
    customer_key = billing_meter.customer_mapping.event_payload_key
    value_key = billing_meter.value_settings.event_payload_key
    formula = billing_meter.default_aggregation.formula
    if (customer_key, value_key, formula) != (CUSTOMER_PAYLOAD_KEY, VALUE_PAYLOAD_KEY, "sum"):
        raise OnboardingError(
            f"Stripe meter {billing_meter.id} ({event_name}) reads customer from {customer_key!r} and "
            f"value from {value_key!r} with formula {formula!r}; the platform sends "
            f"{CUSTOMER_PAYLOAD_KEY!r} and {VALUE_PAYLOAD_KEY!r} to be summed: fix or deactivate it "
            "at Stripe, or set another event name on the Stripe meter row"
        )


def _billing_meter_ensure(client: stripe.StripeClient, stripe_meter: StripeMeter) -> tuple[object, bool]:
    event_name = stripe_meter.event_name
    billing_meter = None
    if stripe_meter.stripe_meter_id:
        try:
            billing_meter = client.v1.billing.meters.retrieve(stripe_meter.stripe_meter_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
    if billing_meter is None or billing_meter.event_name != event_name:
        billing_meter = _billing_meter_find(client, event_name)
    created = False
    if billing_meter is None:
        meter = stripe_meter.meter
        billing_meter = client.v1.billing.meters.create(
            params={
                "display_name": meter.name[:250],
                "event_name": event_name,
                # Each event is the change of one hour's aggregate, so the period's total is their sum.
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"type": "by_id", "event_payload_key": CUSTOMER_PAYLOAD_KEY},
                "value_settings": {"event_payload_key": VALUE_PAYLOAD_KEY},
            },
            options={"idempotency_key": _key("meter", event_name, "create")},
        )
        created = True
    _billing_meter_check(billing_meter, event_name)
    if billing_meter.status != "active":
        billing_meter = client.v1.billing.meters.reactivate(billing_meter.id)
    return billing_meter, created


def price_params(*, price: Price, meter: Meter, billing_meter_id: str) -> dict:
    """The Stripe price for a local metered-plan Price (amounts in minor units, as Stripe's)."""
    try:
        tiers = price_tiers_validate(model=price.model, tiers=price.tiers, package_size=price.package_size)
    except PricingError as exc:
        raise OnboardingError(f"the metered price of {meter.code} is invalid: {exc.message}") from None
    params: dict = {
        "currency": price.currency.lower(),
        "recurring": {"interval": "month", "usage_type": "metered", "meter": billing_meter_id},
        "lookup_key": lookup_key_for(meter),
        "metadata": {META_METER_CODE: meter.code},
    }
    if price.model in (Price.Model.GRADUATED, Price.Model.VOLUME):
        params["billing_scheme"] = "tiered"
        params["tiers_mode"] = price.model
        params["tiers"] = [
            {
                "up_to": "inf" if tier.up_to is None else tier.up_to,
                "unit_amount_decimal": plain_decimal(tier.unit_amount),
                "flat_amount_decimal": plain_decimal(tier.flat_amount),
            }
            for tier in tiers
        ]
    else:
        params["billing_scheme"] = "per_unit"
        params["unit_amount_decimal"] = plain_decimal(price.unit_amount)
        if price.model == Price.Model.PACKAGE:
            # Whole packages, rounded up, as the pricing preview charges them.
            params["transform_quantity"] = {"divide_by": price.package_size, "round": "up"}
    return params


def _dec(value) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def _price_shape_of_params(params: dict) -> tuple:
    tiers = tuple(
        (
            None if tier["up_to"] == "inf" else int(tier["up_to"]),
            _dec(tier["unit_amount_decimal"]),
            _dec(tier["flat_amount_decimal"]),
        )
        for tier in params.get("tiers", [])
    )
    transform = params.get("transform_quantity")
    return (
        params["currency"],
        params["recurring"]["meter"],
        params["billing_scheme"],
        params.get("tiers_mode"),
        _dec(params.get("unit_amount_decimal")),
        tiers,
        (int(transform["divide_by"]), transform["round"]) if transform else None,
    )


def _price_shape_of_stripe(price) -> tuple:
    tiers = tuple(
        (
            tier.get("up_to"),
            _dec(
                tier.get("unit_amount_decimal")
                if tier.get("unit_amount_decimal") is not None
                else tier.get("unit_amount") or 0
            ),
            _dec(
                tier.get("flat_amount_decimal")
                if tier.get("flat_amount_decimal") is not None
                else tier.get("flat_amount") or 0
            ),
        )
        for tier in (price.get("tiers") or [])
    )
    transform = price.get("transform_quantity")
    recurring = price.get("recurring") or {}
    unit = price.get("unit_amount_decimal")
    if unit is None and price.get("unit_amount") is not None:
        unit = price.get("unit_amount")
    return (
        price.get("currency"),
        recurring.get("meter"),
        price.get("billing_scheme"),
        price.get("tiers_mode"),
        _dec(unit) if price.get("billing_scheme") == "per_unit" else None,
        tiers,
        (int(transform["divide_by"]), transform["round"]) if transform else None,
    )


def _price_usable(price, params: dict) -> bool:
    recurring = price.get("recurring") or {}
    return (
        bool(price.get("active"))
        and recurring.get("usage_type") == "metered"
        and _price_shape_of_stripe(price) == _price_shape_of_params(params)
    )


def _price_ensure(
    client: stripe.StripeClient, stripe_meter: StripeMeter, params: dict
) -> tuple[object, bool]:
    candidates = []
    if stripe_meter.stripe_price_id:
        try:
            candidates.append(
                client.v1.prices.retrieve(stripe_meter.stripe_price_id, params={"expand": ["tiers"]})
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
    found = client.v1.prices.list(
        params={"lookup_keys": [params["lookup_key"]], "expand": ["data.tiers"], "limit": 10}
    )
    candidates.extend(found.data)
    for candidate in candidates:
        if _price_usable(candidate, params):
            return candidate, False

    meter = stripe_meter.meter
    product_id = stripe_meter.stripe_product_id or next(
        (c.product if isinstance(c.product, str) else c.product.id for c in candidates), ""
    )
    create = dict(params)
    # A changed local price makes a new Stripe price (prices are immutable) that takes over the
    # lookup key; subscriptions move to it in tenant_subscription_ensure.
    create["transfer_lookup_key"] = True
    if product_id:
        create["product"] = product_id
    else:
        # Product and price in one call: no product can be left without its price by a crash.
        create["product_data"] = {
            "name": meter.name[:250],
            "unit_label": meter.unit[:12],
            "metadata": {META_METER_CODE: meter.code},
        }
    price = client.v1.prices.create(
        params=create,
        options={"idempotency_key": _key("meter", meter.code, "price", idempotency_digest(create))},
    )
    return price, True


def stripe_meter_ensure(*, meter: Meter) -> MeterSyncResult:
    """Make sure `meter` has its Stripe billing meter and, if it has a metered-plan Price, its
    metered price; record their ids on the StripeMeter row (created with event name = code)."""
    client = stripe_client(max_network_retries=2)
    stripe_meter, _ = StripeMeter.objects.select_related("meter").get_or_create(
        meter=meter, defaults={"event_name": meter.code}
    )
    billing_meter, meter_created = _billing_meter_ensure(client, stripe_meter)
    stripe_meter.stripe_meter_id = billing_meter.id

    local_price = Price.objects.filter(meter=meter, plan=Tenant.Plan.METERED).first()
    price_created, note = False, ""
    if local_price is None:
        note = "no metered-plan price in the pricing table, so no Stripe price"
    else:
        params = price_params(price=local_price, meter=meter, billing_meter_id=billing_meter.id)
        price, price_created = _price_ensure(client, stripe_meter, params)
        mirror_price(price)
        stripe_meter.stripe_price_id = price.id
        stripe_meter.stripe_product_id = price.product if isinstance(price.product, str) else price.product.id
    stripe_meter.synced_at = timezone.now()
    with transaction.atomic():
        stripe_meter.save()
    logger.info(
        "stripe meter %s ensured (meter %s, price %s)",
        stripe_meter.event_name,
        stripe_meter.stripe_meter_id,
        stripe_meter.stripe_price_id,
    )
    return MeterSyncResult(
        stripe_meter=stripe_meter, meter_created=meter_created, price_created=price_created, note=note
    )


def meters_ensure() -> list[MeterSyncResult]:
    """`stripe_meter_ensure` for every local Meter."""
    return [stripe_meter_ensure(meter=meter) for meter in Meter.objects.order_by("code")]


def metered_prices() -> dict[str, str]:
    """{billing meter id: metered price id} of every meter that has both at Stripe."""
    rows = StripeMeter.objects.exclude(stripe_meter_id="").exclude(stripe_price_id="")
    return dict(rows.values_list("stripe_meter_id", "stripe_price_id"))
