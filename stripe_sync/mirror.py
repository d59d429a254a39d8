"""dj-stripe's mirror of Stripe objects: one helper per kind, for onboarding, sync and webhooks.

Each helper takes a Stripe object as stripe-python returns it (or its dict, e.g. a webhook payload;
no new request is made for the object itself) and stores it through dj-stripe's
`sync_from_stripe_data`, which also fetches and mirrors what it refers to (the customer of a
subscription, the product of a price, ...).

dj-stripe 2.11 was written for API versions older than the one stripe-python 15 speaks, so a few
fields are put back where it reads them before the object is handed over (see `_compat_*`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import stripe
from django.conf import settings
from djstripe import models as djstripe_models


def _wire(value: Any) -> Any:
    # stripe-python 15 decodes `*_decimal` fields to Decimal; on the wire (and in dj-stripe's JSON
    # fields) they are strings.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    return value


def stripe_dict(data: Any) -> dict:
    """A plain copy of a Stripe object (a `StripeObject` or a dict from a webhook payload), as JSON
    would carry it."""
    if hasattr(data, "to_dict"):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise TypeError(f"not a Stripe object: {type(data).__name__}")
    return _wire(copy.deepcopy(dict(data)))


def stripe_id(value: Any) -> str | None:
    """The id of a Stripe reference, expanded (a dict or a stripe-python object) or not (its id);
    None for none."""
    if isinstance(value, Mapping):
        return value.get("id")
    if value is None or isinstance(value, str):
        return value or None
    return getattr(value, "id", None)


def _compat_subscription(data: dict) -> dict:
    # Since API version 2025-03-31 the billing period lives on each subscription item; dj-stripe
    # 2.11 reads `current_period_start/end` on the subscription (Subscription.current_period_end
    # and its is_valid / is_period_current checks). Every item of one subscription shares the
    # period for monthly metered prices, so the first item's period is the subscription's.
    items = (data.get("items") or {}).get("data") or []
    for field in ("current_period_start", "current_period_end"):
        if data.get(field) is None:
            values = [item.get(field) for item in items if item.get(field) is not None]
            if values:
                data[field] = min(values) if field.endswith("start") else max(values)
    return data


def _compat_invoice(data: dict) -> dict:
    # Since 2025-03-31 an invoice names its subscription under parent.subscription_details;
    # dj-stripe 2.11 links Invoice.subscription from the top-level field.
    if not data.get("subscription"):
        parent = data.get("parent") or {}
        details = parent.get("subscription_details") or {}
        subscription = stripe_id(details.get("subscription"))
        if subscription:
            data["subscription"] = subscription
    # `paid` was removed in 2025-03-31 (status says it); dj-stripe's Invoice.paid, which its admin
    # lists, reads it without a default and the invoice list answered 500 (seen in the demo).
    data.setdefault("paid", data.get("status") == "paid")
    return data


def _sync(model, data: dict):
    api_key = settings.STRIPE_API_KEY or None
    # dj-stripe walks nested lists with auto_paging_iter (a subscription's items), so it needs
    # stripe-python objects rather than dicts; this makes them without another request.
    return model.sync_from_stripe_data(
        stripe.convert_to_stripe_object(data, api_key=api_key), api_key=api_key
    )


def mirror_customer(data: Any) -> djstripe_models.Customer:
    return _sync(djstripe_models.Customer, stripe_dict(data))


def mirror_product(data: Any) -> djstripe_models.Product:
    return _sync(djstripe_models.Product, stripe_dict(data))


def mirror_price(data: Any) -> djstripe_models.Price:
    return _sync(djstripe_models.Price, stripe_dict(data))


def mirror_subscription(data: Any) -> djstripe_models.Subscription:
    return _sync(djstripe_models.Subscription, _compat_subscription(stripe_dict(data)))


def mirror_invoice(data: Any) -> djstripe_models.Invoice:
    return _sync(djstripe_models.Invoice, _compat_invoice(stripe_dict(data)))


_MIRRORS = {
    "customer": mirror_customer,
    "product": mirror_product,
    "price": mirror_price,
    "subscription": mirror_subscription,
    "invoice": mirror_invoice,
}


def mirror_object(data: Any):
    """Mirror any object of the kinds above by its `object` field; None for kinds not mirrored."""
    data = stripe_dict(data)
    mirror = _MIRRORS.get(data.get("object", ""))
    return mirror(data) if mirror else None
