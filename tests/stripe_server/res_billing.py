"""Subscriptions, subscription items, invoices, invoice items and checkout sessions.

Shapes follow the API version stripe-python 15 pins (2026-08-26.dahlia, the "basil" layout since
2025-03-31): billing periods live on subscription items (`current_period_start/end`), an invoice
points to its subscription through `parent.subscription_details`, invoice lines and invoice items
carry `pricing.price_details`, and metered prices are billed from billing meters.
"""

from __future__ import annotations

import calendar
import copy
import secrets
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from . import res_credits
from .errors import StripeError, invalid, missing, no_such, no_such_param
from .res_core import TEST_CARDS as _TEST_CARDS
from .res_core import _attach as attach_payment_method
from .res_core import (
    card_declined,
    check_currency,
    create_price,
    emit_changes,
    get_or_404,
    live_customer_param,
    live_or_404,
    materialize_payment_method,
    new_payment_method,
    new_setup_intent,
    payment_method_behaviour,
    retrieve_route,
    search_route,
    tombstone,
)
from .routing import Ctx, route
from .state import INCLUDABLE, RENDER_HOOKS, apply_metadata, as_bool, as_decimal, as_int, diff, new_id

NO_PAYMENT_METHOD = (
    "This customer has no attached payment source or default payment method. Please consider adding a "
    "default payment method. For more information, visit "
    "https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority."
)
TIMES = "\u00d7"  # the multiplication sign in Stripe's line descriptions ("1 x Product")

# helpers -------------------------------------------------------------------------------------------


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    dt = datetime.fromtimestamp(ts, UTC)
    months = count * (12 if interval == "year" else 1)
    month_index = dt.month - 1 + months
    year = dt.year + month_index // 12
    month = month_index % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def _dec(value) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def price_amount(ctx: Ctx, price: dict, quantity: Decimal) -> Decimal:
    """The amount, in minor units (possibly fractional), Stripe bills for `quantity` of `price`."""
    q = Decimal(quantity)
    tq = price.get("transform_quantity")
    if tq:
        rounding = ROUND_CEILING if tq.get("round") == "up" else ROUND_FLOOR
        q = (q / Decimal(tq["divide_by"])).to_integral_value(rounding=rounding)
    if q == 0:
        return Decimal(0)
    if price["billing_scheme"] == "per_unit":
        return q * _dec(price["unit_amount_decimal"])
    tiers = ctx.state.meta[price["id"]].get("tiers") or []
    if price["tiers_mode"] == "volume":
        for tier in tiers:
            if tier["up_to"] is None or q <= tier["up_to"]:
                return q * _dec(tier["unit_amount_decimal"]) + _dec(tier["flat_amount_decimal"])
        return Decimal(0)
    total = Decimal(0)
    lower = Decimal(0)
    for tier in tiers:
        upper = Decimal(tier["up_to"]) if tier["up_to"] is not None else None
        if q <= lower:
            break
        in_tier = (min(q, upper) if upper is not None else q) - lower
        total += in_tier * _dec(tier["unit_amount_decimal"]) + _dec(tier["flat_amount_decimal"])
        if upper is None:
            break
        lower = upper
    return total


def _decimal_text(value) -> str:
    """A quantity as Stripe's decimal strings write it: "130", "7.5"."""
    return format(Decimal(str(value)).normalize(), "f")


def to_minor(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _plan(price: dict) -> dict:
    rec = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": rec.get("interval"),
        "interval_count": rec.get("interval_count"),
        "livemode": False,
        "metadata": price["metadata"],
        "meter": rec.get("meter"),
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": rec.get("trial_period_days"),
        "usage_type": rec.get("usage_type"),
    }


def _is_metered(price: dict) -> bool:
    return bool(price.get("recurring")) and price["recurring"]["usage_type"] == "metered"


# subscription items --------------------------------------------------------------------------------


def _render_item(state, out: dict) -> None:
    price = state.objects.get(out["price"]) if isinstance(out.get("price"), str) else None
    if price is not None:
        out["price"] = state.render(price)
        out["plan"] = _plan(price)


RENDER_HOOKS["subscription_item"] = _render_item


def _render_subscription(state, out: dict) -> None:
    ids = state.meta[out["id"]].get("items", [])
    items = [state.render(state.objects[i]) for i in ids if i in state.objects]
    out["items"] = {
        "object": "list",
        "data": items,
        "has_more": False,
        "total_count": len(items),
        "url": f"/v1/subscription_items?subscription={out['id']}",
    }


RENDER_HOOKS["subscription"] = _render_subscription


def _items_of(ctx: Ctx, sub: dict) -> list[dict]:
    return [
        ctx.state.objects[i] for i in ctx.state.meta[sub["id"]].get("items", []) if i in ctx.state.objects
    ]


def _new_item(ctx: Ctx, sub: dict, price: dict, quantity, metadata, start: int, end: int) -> dict:
    item = {
        "id": new_id("si", 14),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": ctx.now(),
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": apply_metadata({}, metadata),
        "price": price["id"],
        "subscription": sub["id"],
        "tax_rates": [],
    }
    if not _is_metered(price):
        item["quantity"] = quantity
    ctx.state.put(item)
    ctx.state.meta[sub["id"]].setdefault("items", []).append(item["id"])
    return item


def _resolve_item_price(ctx: Ctx, spec: dict, name: str, customer_currency: str | None) -> dict:
    if spec.get("price") and spec.get("price_data"):
        raise invalid(f"{name}[price]", "You may only specify one of these parameters: price, price_data.")
    if spec.get("price"):
        price = ctx.state.get(spec["price"], "price")
        if price is None:
            raise no_such_param("price", spec["price"], f"{name}[price]")
    elif isinstance(spec.get("price_data"), dict):
        data = dict(spec["price_data"])
        if not data.get("recurring"):
            raise missing(f"{name}[price_data][recurring]")
        price = create_price(ctx, data, param_prefix=f"{name}[price_data]")
        price["active"] = False
        ctx.state.put(price)
        return price
    elif spec.get("plan"):
        price = ctx.state.get(spec["plan"], "price")
        if price is None:
            raise no_such_param("plan", spec["plan"], f"{name}[plan]")
    else:
        raise missing(f"{name}[price]")
    if not price["active"]:
        raise invalid(
            f"{name}[price]", "The price specified is inactive. This field only accepts active prices."
        )
    if price["type"] != "recurring":
        raise invalid(
            f"{name}[price]",
            "The price specified is set to `type=one_time` but this field only accepts prices with "
            "`type=recurring`.",
        )
    return price


def _item_quantity(spec: dict, price: dict, name: str):
    if _is_metered(price):
        if spec.get("quantity") not in (None, ""):
            raise invalid(
                f"{name}[quantity]",
                "Quantity should not be specified where usage_type is `metered`. "
                f"Remove quantity from `{name}`.",
            )
        return None
    return as_int(spec, "quantity", 1, minimum=0)


# subscriptions -------------------------------------------------------------------------------------


def _customer_default_pm(ctx: Ctx, customer_id: str) -> str | None:
    cus = ctx.state.get(customer_id, "customer")
    if cus is None or cus.get("deleted"):
        return None
    return cus["invoice_settings"].get("default_payment_method")


def _sub_pm(ctx: Ctx, sub: dict) -> str | None:
    return sub.get("default_payment_method") or _customer_default_pm(ctx, sub["customer"])


def set_subscription_status(ctx: Ctx, sub: dict, status: str, *, emit: bool = True) -> None:
    if sub["status"] == status:
        return
    previous = {"status": sub["status"]}
    sub["status"] = status
    ctx.state.put(sub)
    if emit:
        ctx.emit("customer.subscription.updated", sub, previous)


def _check_subscription_pm(ctx: Ctx, customer_id: str, pm_id, param: str) -> str | None:
    if pm_id in (None, ""):
        return None
    pm = materialize_payment_method(ctx, pm_id, param)
    if pm.get("customer") != customer_id:
        raise invalid(
            param,
            f"The customer does not have a payment method with the ID {pm['id']}. The payment method must be "
            "attached to the customer.",
        )
    return pm["id"]


def create_subscription(ctx: Ctx, p: dict) -> dict:
    customer_id = p.get("customer")
    if not customer_id:
        raise missing("customer")
    cus = live_customer_param(ctx, customer_id)
    items = p.get("items")
    if not items:
        raise missing("items")
    if not isinstance(items, list):
        raise invalid("items", "Invalid array")
    resolved = []
    seen = set()
    interval = None
    currency = None
    for i, spec in enumerate(items):
        name = f"items[{i}]"
        if not isinstance(spec, dict):
            raise invalid(name, "Invalid object")
        price = _resolve_item_price(ctx, spec, name, cus.get("currency"))
        if price["id"] in seen:
            raise invalid(name, f"Cannot add multiple subscription items with the same price: {price['id']}")
        seen.add(price["id"])
        key = (price["recurring"]["interval"], price["recurring"]["interval_count"])
        if interval is not None and key != interval:
            raise invalid(
                name,
                "All prices on a subscription must have the same `recurring.interval` and "
                "`recurring.interval_count`.",
            )
        interval = key
        if currency is not None and price["currency"] != currency:
            raise invalid(name, "All prices on a subscription must have the same currency.")
        currency = price["currency"]
        resolved.append((price, _item_quantity(spec, price, name), spec.get("metadata")))
    collection = p.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise invalid(
            "collection_method",
            "Invalid collection_method: must be one of charge_automatically or send_invoice",
        )
    days_until_due = as_int(p, "days_until_due", None, minimum=0)
    if collection == "send_invoice" and days_until_due is None:
        raise missing("days_until_due")
    behaviour = p.get("payment_behavior") or "allow_incomplete"
    if behaviour not in (
        "allow_incomplete",
        "default_incomplete",
        "error_if_incomplete",
        "pending_if_incomplete",
    ):
        raise invalid(
            "payment_behavior",
            "Invalid payment_behavior: must be one of allow_incomplete, "
            "default_incomplete, error_if_incomplete, or pending_if_incomplete",
        )
    default_pm = _check_subscription_pm(
        ctx, cus["id"], p.get("default_payment_method"), "default_payment_method"
    )
    now = ctx.now()
    trial_days = as_int(p, "trial_period_days", None, minimum=0)
    trial_end = p.get("trial_end")
    if trial_end == "now":
        trial_end = None
    elif trial_end not in (None, ""):
        trial_end = as_int(p, "trial_end")
        if trial_end <= now:
            raise invalid("trial_end", "Invalid timestamp: must be an integer Unix timestamp in the future.")
    if trial_days:
        trial_end = now + trial_days * 86400
    start = now
    end = trial_end if trial_end else add_interval(start, interval[0], interval[1])
    # Checks that must fail before anything is written.
    first_amount = sum(
        to_minor(price_amount(ctx, price, Decimal(q))) for price, q, _ in resolved if q is not None
    )
    pm_for_payment = default_pm or cus["invoice_settings"].get("default_payment_method")
    if (
        behaviour == "error_if_incomplete"
        and collection == "charge_automatically"
        and not trial_end
        and first_amount > 0
    ):
        if not pm_for_payment:
            raise invalid(
                "customer",
                "This customer has no attached payment source or default payment method. Please consider "
                "adding a default payment method.",
            )
        if payment_method_behaviour(ctx, pm_for_payment) != "ok":
            raise card_declined()
    sub = {
        "id": new_id("sub", 24),
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": end if trial_end else start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": as_bool(p, "cancel_at_period_end", False),
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": collection,
        "created": now,
        "currency": currency,
        "customer": cus["id"],
        "customer_account": None,
        "days_until_due": days_until_due,
        "default_payment_method": default_pm,
        "default_source": None,
        "default_tax_rates": [],
        "description": p.get("description") or None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "livemode": False,
        "metadata": apply_metadata({}, p.get("metadata")),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": now,
        "status": "incomplete",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": now if trial_end else None,
    }
    ctx.state.put(sub)
    ctx.state.meta[sub["id"]]["items"] = []
    ctx.state.meta[sub["id"]]["interval"] = interval
    for price, quantity, metadata in resolved:
        _new_item(ctx, sub, price, quantity, metadata, start, end)
    if p.get("cancel_at") not in (None, ""):
        sub["cancel_at"] = as_int(p, "cancel_at")
    # The first invoice.
    lines = []
    for item in _items_of(ctx, sub):
        price = ctx.state.objects[item["price"]]
        qty = item.get("quantity", 0) if not _is_metered(price) else 0
        amount = 0 if trial_end else to_minor(price_amount(ctx, price, Decimal(qty)))
        lines.append(
            _subscription_line(ctx, sub, item, price, qty, amount, start, end, trial=bool(trial_end))
        )
    invoice = new_invoice(
        ctx,
        cus,
        currency=currency,
        subscription=sub,
        billing_reason="subscription_create",
        collection_method=collection,
        days_until_due=days_until_due,
        auto_advance=True,
        period=(start, start),
    )
    for line in lines:
        add_line(ctx, invoice, line)
    ctx.emit("invoice.created", invoice)
    sub["latest_invoice"] = invoice["id"]
    if trial_end:
        finalize_invoice(ctx, invoice, update_subscription=False)
        sub["status"] = "trialing"
    elif behaviour == "default_incomplete" and invoice["amount_due"] > 0:
        finalize_invoice(ctx, invoice, update_subscription=False)
        sub["status"] = "incomplete"
    else:
        finalize_invoice(ctx, invoice, update_subscription=False)
        if invoice["status"] == "paid" or collection == "send_invoice":
            sub["status"] = "active"
        else:
            outcome = attempt_payment(ctx, invoice, update_subscription=False)
            sub["status"] = "active" if outcome == "paid" else "incomplete"
    ctx.state.put(sub)
    ctx.emit("customer.subscription.created", sub)
    return sub


def _subscription_line(
    ctx: Ctx,
    sub: dict,
    item: dict,
    price: dict,
    quantity,
    amount: int,
    start: int,
    end: int,
    *,
    trial: bool = False,
    description: str | None = None,
) -> dict:
    product = ctx.state.objects.get(price["product"], {})
    if description is None:
        if trial:
            description = f"Trial period for {product.get('name', '')}"
        else:
            description = f"{quantity} {TIMES} {product.get('name', '')}"
    return {
        "id": new_id("il", 24),
        "object": "line_item",
        "amount": amount,
        "currency": price["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": dict(item.get("metadata") or {}),
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": end, "start": start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        # Stripe: `quantity` truncated to an integer, the full precision in `quantity_decimal`.
        "quantity": int(Decimal(quantity)),
        "quantity_decimal": _decimal_text(quantity),
        "subscription": sub["id"],
        "subtotal": amount,
        "taxes": [],
    }


@route("POST", "/v1/subscriptions", "_subscription_create_params")
def subscriptions_create(ctx: Ctx):
    return ctx.render(create_subscription(ctx, ctx.params))


subscriptions_search = search_route("subscription", "subscriptions", "_subscription_search_params")


subscriptions_retrieve = retrieve_route(
    "/v1/subscriptions/{id}", "subscription", "subscription", "_subscription_retrieve_params"
)


@route("POST", "/v1/subscriptions/{id}", "_subscription_update_params")
def subscriptions_update(ctx: Ctx):
    sub = get_or_404(ctx, ctx.path_args["id"], "subscription", "subscription")
    p = ctx.params
    if sub["status"] == "canceled":
        allowed = {"metadata", "cancellation_details", "expand"}
        if set(p) - allowed:
            raise invalid(
                sorted(set(p) - allowed)[0],
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
    before = ctx.state.render(sub)
    if "metadata" in p:
        sub["metadata"] = apply_metadata(sub["metadata"], p["metadata"])
    if "description" in p:
        sub["description"] = p["description"] or None
    if "cancel_at_period_end" in p:
        sub["cancel_at_period_end"] = as_bool(p, "cancel_at_period_end")
        if sub["cancel_at_period_end"]:
            sub["cancel_at"] = max(i["current_period_end"] for i in _items_of(ctx, sub))
        else:
            sub["cancel_at"] = None
    if "cancel_at" in p:
        sub["cancel_at"] = as_int(p, "cancel_at") if p["cancel_at"] not in ("", None) else None
    if isinstance(p.get("cancellation_details"), dict):
        for key in ("comment", "feedback"):
            if key in p["cancellation_details"]:
                sub["cancellation_details"][key] = p["cancellation_details"][key] or None
    if "default_payment_method" in p:
        sub["default_payment_method"] = _check_subscription_pm(
            ctx, sub["customer"], p["default_payment_method"], "default_payment_method"
        )
    if "collection_method" in p:
        sub["collection_method"] = p["collection_method"]
    if "days_until_due" in p:
        sub["days_until_due"] = as_int(p, "days_until_due")
    if "pause_collection" in p:
        sub["pause_collection"] = p["pause_collection"] or None
    if p.get("trial_end") == "now" and sub["status"] == "trialing":
        sub["trial_end"] = ctx.now()
        sub["status"] = "active"
    if "items" in p:
        _update_items(ctx, sub, p["items"])
    ctx.state.put(sub)
    emit_changes(ctx, sub, before, "customer.subscription.updated")
    return ctx.render(sub)


def _update_items(ctx: Ctx, sub: dict, items) -> None:
    if not isinstance(items, list):
        raise invalid("items", "Invalid array")
    current = {i["id"]: i for i in _items_of(ctx, sub)}
    interval = ctx.state.meta[sub["id"]].get("interval")
    for idx, spec in enumerate(items):
        name = f"items[{idx}]"
        if not isinstance(spec, dict):
            raise invalid(name, "Invalid object")
        if spec.get("id"):
            item = current.get(spec["id"])
            if item is None:
                raise no_such_param("subscription_item", spec["id"], f"{name}[id]")
            if as_bool(spec, "deleted", False):
                if len(current) == 1:
                    raise invalid(name, "A subscription must have at least one active item.")
                ctx.state.meta[sub["id"]]["items"].remove(item["id"])
                current.pop(item["id"])
                ctx.state.put({"id": item["id"], "object": "subscription_item", "deleted": True})
                continue
            if spec.get("price") or spec.get("price_data"):
                price = _resolve_item_price(ctx, spec, name, None)
                item["price"] = price["id"]
            price = ctx.state.objects[item["price"]]
            if "quantity" in spec:
                q = _item_quantity(spec, price, name)
                if q is not None:
                    item["quantity"] = q
            if "metadata" in spec:
                item["metadata"] = apply_metadata(item["metadata"], spec["metadata"])
            ctx.state.put(item)
            continue
        price = _resolve_item_price(ctx, spec, name, None)
        if any(i["price"] == price["id"] for i in current.values()):
            raise invalid(name, f"Cannot add multiple subscription items with the same price: {price['id']}")
        key = (price["recurring"]["interval"], price["recurring"]["interval_count"])
        if interval is not None and key != tuple(interval):
            raise invalid(
                name,
                "All prices on a subscription must have the same `recurring.interval` and "
                "`recurring.interval_count`.",
            )
        any_item = next(iter(current.values()), None)
        start = any_item["current_period_start"] if any_item else ctx.now()
        end = any_item["current_period_end"] if any_item else add_interval(start, *key)
        item = _new_item(ctx, sub, price, _item_quantity(spec, price, name), spec.get("metadata"), start, end)
        current[item["id"]] = item


def cancel_subscription(
    ctx: Ctx, sub: dict, *, reason: str = "cancellation_requested", invoice_now: bool = False
) -> dict:
    before = ctx.state.render(sub)
    now = ctx.now()
    if invoice_now:
        _bill_period(ctx, sub, final=True)
    sub["status"] = "canceled"
    sub["canceled_at"] = now
    sub["ended_at"] = now
    sub["cancel_at_period_end"] = False
    sub["cancellation_details"]["reason"] = reason
    ctx.state.put(sub)
    for inv in ctx.state.all("invoice"):
        parent = inv.get("parent") or {}
        details = parent.get("subscription_details") or {}
        if details.get("subscription") == sub["id"] and inv["status"] == "draft":
            inv["auto_advance"] = False
            ctx.state.put(inv)
    ctx.emit("customer.subscription.deleted", sub, diff(before, ctx.state.render(sub)))
    return sub


@route("DELETE", "/v1/subscriptions/{id}", "_subscription_cancel_params")
def subscriptions_cancel(ctx: Ctx):
    sub = get_or_404(ctx, ctx.path_args["id"], "subscription", "subscription")
    if sub["status"] == "canceled":
        raise no_such("subscription", sub["id"])
    p = ctx.params
    if isinstance(p.get("cancellation_details"), dict):
        for key in ("comment", "feedback"):
            if key in p["cancellation_details"]:
                sub["cancellation_details"][key] = p["cancellation_details"][key] or None
    cancel_subscription(ctx, sub, invoice_now=as_bool(p, "invoice_now", False))
    return ctx.render(sub)


@route("GET", "/v1/subscriptions", "_subscription_list_params")
def subscriptions_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("subscription")
    status = p.get("status")
    if status in (None, ""):
        items = [s for s in items if s["status"] != "canceled"]
    elif status == "ended":
        items = [s for s in items if s["status"] in ("canceled", "incomplete_expired")]
    elif status != "all":
        items = [s for s in items if s["status"] == status]
    if p.get("customer"):
        items = [s for s in items if s["customer"] == p["customer"]]
    if p.get("price"):
        items = [s for s in items if any(i["price"] == p["price"] for i in _items_of(ctx, s))]
    return ctx.state.list_page(items, p, "/v1/subscriptions", label="subscription")


# subscription items endpoints ----------------------------------------------------------------------


@route("GET", "/v1/subscription_items", "_subscription_item_list_params")
def subscription_items_list(ctx: Ctx):
    sub_id = ctx.params.get("subscription")
    if not sub_id:
        raise missing("subscription")
    sub = ctx.state.require(sub_id, "subscription", "subscription")
    return ctx.state.list_page(
        _items_of(ctx, sub), ctx.params, "/v1/subscription_items", ordered=True, label="subscription_item"
    )


subscription_items_retrieve = retrieve_route(
    "/v1/subscription_items/{id}",
    "subscription_item",
    "subscription_item",
    "_subscription_item_retrieve_params",
    live=True,
)


@route("POST", "/v1/subscription_items", "_subscription_item_create_params")
def subscription_items_create(ctx: Ctx):
    p = ctx.params
    if not p.get("subscription"):
        raise missing("subscription")
    sub = ctx.state.require(p["subscription"], "subscription", "subscription")
    spec = {k: v for k, v in p.items() if k in ("price", "price_data", "plan", "quantity", "metadata")}
    before = ctx.state.render(sub)
    _update_items(ctx, sub, [spec])
    item = ctx.state.objects[ctx.state.meta[sub["id"]]["items"][-1]]
    ctx.emit("customer.subscription.updated", sub, diff(before, ctx.state.render(sub)))
    return ctx.render(item)


@route("POST", "/v1/subscription_items/{id}", "_subscription_item_update_params")
def subscription_items_update(ctx: Ctx):
    item = live_or_404(ctx, ctx.path_args["id"], "subscription_item")
    sub = ctx.state.objects[item["subscription"]]
    spec = {
        "id": item["id"],
        **{
            k: v
            for k, v in ctx.params.items()
            if k in ("price", "price_data", "plan", "quantity", "metadata")
        },
    }
    before = ctx.state.render(sub)
    _update_items(ctx, sub, [spec])
    ctx.emit("customer.subscription.updated", sub, diff(before, ctx.state.render(sub)))
    return ctx.render(ctx.state.objects[item["id"]])


@route("DELETE", "/v1/subscription_items/{id}", "_subscription_item_delete_params")
def subscription_items_delete(ctx: Ctx):
    item = live_or_404(ctx, ctx.path_args["id"], "subscription_item")
    sub = ctx.state.objects[item["subscription"]]
    before = ctx.state.render(sub)
    _update_items(ctx, sub, [{"id": item["id"], "deleted": "true"}])
    ctx.emit("customer.subscription.updated", sub, diff(before, ctx.state.render(sub)))
    return {"id": item["id"], "object": "subscription_item", "deleted": True}


# invoices ------------------------------------------------------------------------------------------


def _render_invoice(state, out: dict) -> None:
    lines = out.get("lines", {}).get("data", [])
    out["lines"] = {
        "object": "list",
        "data": lines[:10],
        "has_more": len(lines) > 10,
        "total_count": len(lines),
        "url": f"/v1/invoices/{out['id']}/lines",
    }


RENDER_HOOKS["invoice"] = _render_invoice


def _invoice_payments(state, inv):
    payments = state.meta[inv["id"]].get("payments", [])
    return {
        "object": "list",
        "data": [dict(x) for x in payments],
        "has_more": False,
        "url": f"/v1/invoice_payments?invoice={inv['id']}",
    }


INCLUDABLE["invoice"]["payments"] = _invoice_payments


def new_invoice(
    ctx: Ctx,
    cus: dict,
    *,
    currency: str,
    subscription: dict | None,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    days_until_due=None,
    auto_advance: bool = False,
    description=None,
    metadata=None,
    period: tuple[int, int] | None = None,
    default_payment_method=None,
    store: bool = True,
) -> dict:
    """A draft invoice of `cus`, stored unless `store=False` (a preview)."""
    now = ctx.now()
    iid = new_id("in", 24)
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]),
                "subscription": subscription["id"],
            },
            "type": "subscription_details",
        }
    inv = {
        "id": iid,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Local Stripe test account",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": now + 3600 if auto_advance else None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "confirmation_secret": None,
        "created": now,
        "currency": currency,
        "custom_fields": None,
        "customer": cus["id"],
        "customer_account": None,
        "customer_address": cus.get("address"),
        "customer_email": cus.get("email"),
        "customer_name": cus.get("name"),
        "customer_phone": cus.get("phone"),
        "customer_shipping": cus.get("shipping"),
        "customer_tax_exempt": cus.get("tax_exempt", "none"),
        "customer_tax_ids": [],
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {"object": "list", "data": []},
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": (period or (now, now))[1],
        "period_start": (period or (now, now))[0],
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
    }
    if collection_method == "send_invoice" and days_until_due is not None:
        inv["due_date"] = now + int(days_until_due) * 86400
    if store:
        ctx.state.meta[iid]["days_until_due"] = days_until_due
        ctx.state.put(inv)
    return inv


def recalc(inv: dict) -> None:
    """Totals from the lines; billing credits (`total_pretax_credit_amounts`) come off `total`."""
    subtotal = sum(line["amount"] for line in inv["lines"]["data"])
    credit = sum(c["amount"] for c in inv.get("total_pretax_credit_amounts") or [])
    total = subtotal - credit
    inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
    inv["total"] = inv["total_excluding_tax"] = total
    if inv["status"] in ("draft", "open"):
        inv["amount_due"] = max(total, 0)
        inv["amount_remaining"] = max(inv["amount_due"] - inv["amount_paid"], 0)


def add_line(ctx: Ctx, inv: dict, line: dict) -> None:
    line["invoice"] = inv["id"]
    inv["lines"]["data"].append(line)
    recalc(inv)
    ctx.state.put(inv)


def finalize_invoice(ctx: Ctx, inv: dict, *, update_subscription: bool = True) -> dict:
    if inv["status"] != "draft":
        raise invalid(
            "invoice", "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    now = ctx.now()
    cus = ctx.state.objects.get(inv["customer"], {})
    seq = ctx.state.invoice_sequences.get(inv["customer"], cus.get("next_invoice_sequence", 1))
    prefix = cus.get("invoice_prefix") or "INV"
    inv["number"] = f"{prefix}-{seq:04d}"
    ctx.state.invoice_sequences[inv["customer"]] = seq + 1
    if cus and not cus.get("deleted"):
        cus["next_invoice_sequence"] = seq + 1
        ctx.state.put(cus)
    token = secrets.token_urlsafe(24)
    inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/acct_localtest/test_{token}"
    inv["invoice_pdf"] = f"https://pay.stripe.com/invoice/acct_localtest/test_{token}/pdf?s=ap"
    inv["status"] = "open"
    inv["status_transitions"]["finalized_at"] = now
    inv["effective_at"] = now
    inv["automatically_finalizes_at"] = None
    inv["ending_balance"] = 0
    inv["starting_balance"] = 0
    res_credits.apply_credits(ctx, inv)
    recalc(inv)
    ctx.state.put(inv)
    ctx.emit("invoice.finalized", inv)
    if inv["amount_due"] == 0:
        _mark_paid(ctx, inv, None, update_subscription=update_subscription)
    return inv


def _mark_paid(
    ctx: Ctx, inv: dict, pm_id: str | None, *, out_of_band: bool = False, update_subscription: bool = True
) -> None:
    now = ctx.now()
    amount = inv["amount_remaining"]
    inv["amount_paid"] += amount
    inv["amount_remaining"] = 0
    inv["status"] = "paid"
    inv["status_transitions"]["paid_at"] = now
    inv["next_payment_attempt"] = None
    if amount > 0 or inv["attempt_count"] > 0:
        inv["attempted"] = True
    ctx.state.put(inv)
    if amount > 0 and not out_of_band:
        payments = ctx.state.meta[inv["id"]].setdefault("payments", [])
        for pay in payments:
            if pay["status"] == "open":
                pay["status"] = "canceled"
                pay["status_transitions"]["canceled_at"] = now
        payments.append(
            {
                "id": new_id("inpay", 24),
                "object": "invoice_payment",
                "amount_paid": amount,
                "amount_requested": amount,
                "created": now,
                "currency": inv["currency"],
                "invoice": inv["id"],
                "is_default": True,
                "livemode": False,
                "payment": {"payment_intent": new_id("pi", 24), "type": "payment_intent"},
                "status": "paid",
                "status_transitions": {"canceled_at": None, "paid_at": now},
                "payment_method": pm_id,
            }
        )
    ctx.emit("invoice.paid", inv)
    ctx.emit("invoice.payment_succeeded", inv)
    sub = _invoice_subscription(ctx, inv)
    if update_subscription and sub is not None and sub["status"] in ("incomplete", "past_due", "unpaid"):
        set_subscription_status(ctx, sub, "active")


def _invoice_subscription(ctx: Ctx, inv: dict) -> dict | None:
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return ctx.state.get(details.get("subscription"), "subscription")


def attempt_payment(
    ctx: Ctx, inv: dict, pm_id: str | None = None, *, update_subscription: bool = True
) -> str:
    """Charge an open invoice: "paid", "failed" (card declined) or "no_payment_method"."""
    sub = _invoice_subscription(ctx, inv)
    pm = (
        pm_id
        or inv.get("default_payment_method")
        or (sub and sub.get("default_payment_method"))
        or _customer_default_pm(ctx, inv["customer"])
    )
    if not pm:
        return "no_payment_method"
    if payment_method_behaviour(ctx, pm) == "ok":
        _mark_paid(ctx, inv, pm, update_subscription=update_subscription)
        return "paid"
    now = ctx.now()
    inv["attempt_count"] += 1
    inv["attempted"] = True
    inv["next_payment_attempt"] = now + 3 * 86400 if sub is not None and inv["attempt_count"] < 4 else None
    ctx.state.put(inv)
    ctx.state.meta[inv["id"]].setdefault("payments", []).append(
        {
            "id": new_id("inpay", 24),
            "object": "invoice_payment",
            "amount_paid": None,
            "amount_requested": inv["amount_remaining"],
            "created": now,
            "currency": inv["currency"],
            "invoice": inv["id"],
            "is_default": True,
            "livemode": False,
            "payment": {"payment_intent": new_id("pi", 24), "type": "payment_intent"},
            "status": "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }
    )
    ctx.emit("invoice.payment_failed", inv)
    if update_subscription and sub is not None and sub["status"] == "active":
        set_subscription_status(ctx, sub, "past_due")
    return "failed"


@route("POST", "/v1/invoices", "_invoice_create_params")
def invoices_create(ctx: Ctx):
    p = ctx.params
    if not p.get("customer"):
        raise missing("customer")
    cus = live_customer_param(ctx, p["customer"])
    sub = None
    if p.get("subscription"):
        sub = ctx.state.require(p["subscription"], "subscription", "subscription")
        if sub["customer"] != cus["id"]:
            raise invalid("subscription", "The subscription does not belong to this customer.")
    collection = p.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise invalid(
            "collection_method",
            "Invalid collection_method: must be one of charge_automatically or send_invoice",
        )
    days = as_int(p, "days_until_due", None, minimum=0)
    if collection == "send_invoice" and days is None and not p.get("due_date"):
        raise invalid(
            "days_until_due",
            "Invoices with `collection_method=send_invoice` require `days_until_due` or `due_date`.",
        )
    behaviour = p.get("pending_invoice_items_behavior") or "exclude"
    if behaviour not in ("exclude", "include"):
        raise invalid(
            "pending_invoice_items_behavior",
            "Invalid pending_invoice_items_behavior: must be one of exclude or include",
        )
    currency = check_currency(p["currency"]) if p.get("currency") else (cus.get("currency") or "usd")
    pm = None
    if p.get("default_payment_method"):
        pm = materialize_payment_method(ctx, p["default_payment_method"], "default_payment_method")["id"]
    inv = new_invoice(
        ctx,
        cus,
        currency=currency,
        subscription=sub,
        billing_reason="manual",
        collection_method=collection,
        days_until_due=days,
        auto_advance=as_bool(p, "auto_advance", False),
        description=p.get("description") or None,
        metadata=p.get("metadata"),
        default_payment_method=pm,
    )
    if p.get("due_date"):
        inv["due_date"] = as_int(p, "due_date")
    if p.get("footer"):
        inv["footer"] = p["footer"]
    if behaviour == "include":
        for ii in ctx.state.all("invoiceitem"):
            if ii.get("deleted") or ii["customer"] != cus["id"] or ii["invoice"] is not None:
                continue
            ii_sub = (ii.get("parent") or {}).get("subscription_details", {}) or {}
            if sub is not None and ii_sub.get("subscription") not in (None, sub["id"]):
                continue
            if ii["currency"] != currency:
                continue
            _attach_invoice_item(ctx, inv, ii)
    ctx.emit("invoice.created", inv)
    return ctx.render(inv)


invoices_search = search_route("invoice", "invoices", "_invoice_search_params")


invoices_retrieve = retrieve_route("/v1/invoices/{id}", "invoice", "invoice", "_invoice_retrieve_params")


def _live_invoice(ctx: Ctx) -> dict:
    return live_or_404(ctx, ctx.path_args["id"], "invoice")


@route("POST", "/v1/invoices/{id}", "_invoice_update_params")
def invoices_update(ctx: Ctx):
    inv = _live_invoice(ctx)
    p = ctx.params
    before = ctx.state.render(inv)
    draft_only = {
        "auto_advance",
        "collection_method",
        "days_until_due",
        "due_date",
        "default_payment_method",
        "currency",
    }
    if inv["status"] != "draft":
        bad = sorted(set(p) & draft_only - {"auto_advance"})
        if bad:
            raise invalid(bad[0], f"You can only update `{bad[0]}` on a draft invoice.")
    if "metadata" in p:
        inv["metadata"] = apply_metadata(inv["metadata"], p["metadata"])
    for name in ("description", "footer", "statement_descriptor"):
        if name in p:
            inv[name] = p[name] or None
    if "auto_advance" in p:
        inv["auto_advance"] = as_bool(p, "auto_advance")
        if inv["status"] == "draft":
            inv["automatically_finalizes_at"] = ctx.now() + 3600 if inv["auto_advance"] else None
    if "collection_method" in p:
        inv["collection_method"] = p["collection_method"]
    if "days_until_due" in p:
        days = as_int(p, "days_until_due")
        ctx.state.meta[inv["id"]]["days_until_due"] = days
        inv["due_date"] = ctx.now() + days * 86400 if days is not None else None
    if "due_date" in p:
        inv["due_date"] = as_int(p, "due_date")
    if "default_payment_method" in p:
        inv["default_payment_method"] = (
            materialize_payment_method(ctx, p["default_payment_method"], "default_payment_method")["id"]
            if p["default_payment_method"]
            else None
        )
    ctx.state.put(inv)
    emit_changes(ctx, inv, before, "invoice.updated")
    return ctx.render(inv)


@route("DELETE", "/v1/invoices/{id}", "_invoice_delete_params")
def invoices_delete(ctx: Ctx):
    inv = _live_invoice(ctx)
    if inv["status"] != "draft":
        raise invalid("invoice", "You can only delete draft invoices. Void the invoice instead.")
    last = ctx.state.render(inv)
    for line in inv["lines"]["data"]:
        details = (line.get("parent") or {}).get("invoice_item_details") or {}
        ii = ctx.state.get(details.get("invoice_item"), "invoiceitem")
        if ii is not None:
            ctx.state.put({"id": ii["id"], "object": "invoiceitem", "deleted": True})
    return tombstone(ctx, last, "invoice.deleted")


@route("POST", "/v1/invoices/{id}/finalize", "_invoice_finalize_invoice_params")
def invoices_finalize(ctx: Ctx):
    inv = _live_invoice(ctx)
    if "auto_advance" in ctx.params:
        inv["auto_advance"] = as_bool(ctx.params, "auto_advance")
    finalize_invoice(ctx, inv)
    return ctx.render(inv)


@route("POST", "/v1/invoices/{id}/pay", "_invoice_pay_params")
def invoices_pay(ctx: Ctx):
    inv = _live_invoice(ctx)
    p = ctx.params
    if inv["status"] == "paid":
        raise invalid("invoice", "Invoice is already paid")
    if inv["status"] == "void":
        raise invalid("invoice", "This invoice has been voided and cannot be paid.")
    if inv["status"] == "draft":
        finalize_invoice(ctx, inv)
        if inv["status"] == "paid":
            return ctx.render(inv)
    if as_bool(p, "paid_out_of_band", False):
        _mark_paid(ctx, inv, None, out_of_band=True)
        return ctx.render(inv)
    pm_id = None
    if p.get("payment_method"):
        pm = materialize_payment_method(ctx, p["payment_method"], "payment_method")
        if pm.get("customer") not in (None, inv["customer"]):
            raise invalid("payment_method", "The payment method must be attached to the invoice's customer.")
        pm_id = pm["id"]
    outcome = attempt_payment(ctx, inv, pm_id)
    if outcome == "no_payment_method":
        raise invalid(
            "customer",
            NO_PAYMENT_METHOD,
        )
    if outcome == "failed":
        raise card_declined(extra={"payment_method": {"id": pm_id}} if pm_id else None)
    return ctx.render(inv)


@route("POST", "/v1/invoices/{id}/void", "_invoice_void_invoice_params")
def invoices_void(ctx: Ctx):
    inv = _live_invoice(ctx)
    if inv["status"] not in ("open", "uncollectible"):
        raise invalid(
            "invoice",
            f"You can only void invoices that are open or uncollectible; this one is {inv['status']}.",
        )
    previous = {"status": inv["status"]}
    inv["status"] = "void"
    inv["status_transitions"]["voided_at"] = ctx.now()
    inv["amount_remaining"] = 0
    ctx.state.put(inv)
    res_credits.give_back(ctx, inv)
    ctx.emit("invoice.voided", inv, previous)
    return ctx.render(inv)


@route("POST", "/v1/invoices/{id}/mark_uncollectible", "_invoice_mark_uncollectible_params")
def invoices_mark_uncollectible(ctx: Ctx):
    inv = _live_invoice(ctx)
    if inv["status"] != "open":
        raise invalid("invoice", "You can only mark open invoices as uncollectible.")
    previous = {"status": inv["status"]}
    inv["status"] = "uncollectible"
    inv["status_transitions"]["marked_uncollectible_at"] = ctx.now()
    ctx.state.put(inv)
    ctx.emit("invoice.marked_uncollectible", inv, previous)
    return ctx.render(inv)


@route("POST", "/v1/invoices/{id}/send", "_invoice_send_invoice_params")
def invoices_send(ctx: Ctx):
    inv = _live_invoice(ctx)
    if inv["collection_method"] != "send_invoice":
        raise invalid(
            "invoice", "You can only manually send an invoice if its collection method is 'send_invoice'."
        )
    if inv["status"] == "draft":
        finalize_invoice(ctx, inv)
    ctx.emit("invoice.sent", inv)
    return ctx.render(inv)


@route("GET", "/v1/invoices/{id}/lines", "_invoice_list_lines_params")
def invoices_lines(ctx: Ctx):
    inv = _live_invoice(ctx)
    return ctx.state.list_page(
        inv["lines"]["data"], ctx.params, f"/v1/invoices/{inv['id']}/lines", ordered=True, label="line_item"
    )


@route("GET", "/v1/invoices", "_invoice_list_params")
def invoices_list(ctx: Ctx):
    p = ctx.params
    items = [i for i in ctx.state.all("invoice") if not i.get("deleted")]
    if p.get("customer"):
        items = [i for i in items if i["customer"] == p["customer"]]
    if p.get("status"):
        items = [i for i in items if i["status"] == p["status"]]
    if p.get("collection_method"):
        items = [i for i in items if i["collection_method"] == p["collection_method"]]
    if p.get("subscription"):
        items = [
            i
            for i in items
            if ((i.get("parent") or {}).get("subscription_details") or {}).get("subscription")
            == p["subscription"]
        ]
    return ctx.state.list_page(items, p, "/v1/invoices", label="invoice")


# invoice items -------------------------------------------------------------------------------------


def _invoice_item_line(ctx: Ctx, ii: dict) -> dict:
    price_details = ii["pricing"].get("price_details") if ii.get("pricing") else None
    sub_id = ((ii.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return {
        "id": new_id("il", 24),
        "object": "line_item",
        "amount": ii["amount"],
        "currency": ii["currency"],
        "description": ii["description"],
        "discount_amounts": [],
        "discountable": ii["discountable"],
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": dict(ii["metadata"]),
        "parent": {
            "invoice_item_details": {
                "invoice_item": ii["id"],
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": sub_id,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        },
        "period": dict(ii["period"]),
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": dict(price_details) if price_details else None,
            "type": "price_details",
            "unit_amount_decimal": ii["pricing"]["unit_amount_decimal"],
        },
        "quantity": ii["quantity"],
        "quantity_decimal": _decimal_text(ii["quantity"]),
        "subscription": sub_id,
        "subtotal": ii["amount"],
        "taxes": [],
    }


def _attach_invoice_item(ctx: Ctx, inv: dict, ii: dict) -> None:
    ii["invoice"] = inv["id"]
    ctx.state.put(ii)
    add_line(ctx, inv, _invoice_item_line(ctx, ii))


def _refresh_invoice_item_line(ctx: Ctx, ii: dict) -> None:
    inv = ctx.state.get(ii.get("invoice"), "invoice")
    if inv is None:
        return
    for idx, line in enumerate(inv["lines"]["data"]):
        details = (line.get("parent") or {}).get("invoice_item_details") or {}
        if details.get("invoice_item") == ii["id"]:
            fresh = _invoice_item_line(ctx, ii)
            fresh["id"] = line["id"]
            fresh["invoice"] = inv["id"]
            inv["lines"]["data"][idx] = fresh
    recalc(inv)
    ctx.state.put(inv)


def _remove_invoice_item_line(ctx: Ctx, ii: dict) -> None:
    inv = ctx.state.get(ii.get("invoice"), "invoice")
    if inv is None:
        return
    inv["lines"]["data"] = [
        line
        for line in inv["lines"]["data"]
        if ((line.get("parent") or {}).get("invoice_item_details") or {}).get("invoice_item") != ii["id"]
    ]
    recalc(inv)
    ctx.state.put(inv)


@route("POST", "/v1/invoiceitems", "_invoice_item_create_params")
def invoice_items_create(ctx: Ctx):
    p = ctx.params
    inv = None
    if p.get("invoice"):
        inv = ctx.state.get(p["invoice"], "invoice")
        if inv is None or inv.get("deleted"):
            raise no_such_param("invoice", p["invoice"], "invoice")
        if inv["status"] != "draft":
            raise invalid("invoice", "You can only add invoice items to draft invoices.")
    customer_id = p.get("customer") or (inv["customer"] if inv else None)
    if not customer_id:
        raise missing("customer")
    cus = live_customer_param(ctx, customer_id)
    if inv is not None and inv["customer"] != cus["id"]:
        raise invalid("invoice", "The invoice does not belong to this customer.")
    sub = None
    if p.get("subscription"):
        sub = ctx.state.require(p["subscription"], "subscription", "subscription")
    quantity = as_int(p, "quantity", 1, minimum=0)
    price_ref = (p.get("pricing") or {}).get("price") if isinstance(p.get("pricing"), dict) else None
    sources = [
        name
        for name, present in (
            ("amount", p.get("amount") not in (None, "")),
            ("pricing[price]", bool(price_ref)),
            ("price_data", isinstance(p.get("price_data"), dict)),
            ("unit_amount_decimal", p.get("unit_amount_decimal") not in (None, "")),
        )
        if present
    ]
    if len(sources) > 1:
        raise invalid(
            sources[1],
            "You may only specify one of these parameters: amount, pricing[price], "
            "price_data, unit_amount_decimal.",
        )
    if not sources:
        raise missing("amount")
    price = None
    currency = None
    if "amount" in sources:
        amount = as_int(p, "amount")
        if not p.get("currency"):
            raise missing("currency")
        currency = check_currency(p["currency"])
        unit_dec = format((Decimal(amount) / quantity).normalize(), "f") if quantity else str(amount)
    elif "pricing[price]" in sources:
        price = ctx.state.get(price_ref, "price")
        if price is None:
            raise no_such_param("price", price_ref, "pricing[price]")
        if price["type"] != "one_time":
            raise invalid(
                "pricing[price]",
                "The price specified is set to `type=recurring` but this field only "
                "accepts prices with `type=one_time`.",
            )
        currency = price["currency"]
        amount = to_minor(price_amount(ctx, price, Decimal(quantity)))
        unit_dec = price["unit_amount_decimal"]
    elif "price_data" in sources:
        data = dict(p["price_data"])
        price = create_price(ctx, data, param_prefix="price_data")
        price["active"] = False
        ctx.state.put(price)
        currency = price["currency"]
        amount = to_minor(price_amount(ctx, price, Decimal(quantity)))
        unit_dec = price["unit_amount_decimal"]
    else:
        if not p.get("currency"):
            raise missing("currency")
        currency = check_currency(p["currency"])
        dec = as_decimal(p["unit_amount_decimal"], "unit_amount_decimal")
        amount = to_minor(dec * quantity)
        unit_dec = format(dec.normalize(), "f")
    if inv is not None and inv["currency"] != currency:
        raise invalid("currency", "The currency of the invoice item must match the invoice's currency.")
    now = ctx.now()
    period = p.get("period") if isinstance(p.get("period"), dict) else {}
    ii = {
        "id": new_id("ii", 24),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": cus["id"],
        "customer_account": None,
        "date": now,
        "description": p.get("description")
        or (ctx.state.objects.get(price["product"], {}).get("name") if price else None),
        "discountable": as_bool(p, "discountable", True),
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": apply_metadata({}, p.get("metadata")),
        "net_amount": amount,
        "parent": (
            {
                "subscription_details": {"subscription": sub["id"], "subscription_item": None},
                "type": "subscription_details",
            }
            if sub
            else None
        ),
        "period": {"end": as_int(period, "end", now), "start": as_int(period, "start", now)},
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]} if price else None,
            "type": "price_details",
            "unit_amount_decimal": unit_dec,
        },
        "proration": False,
        "proration_details": {"credited_items": None},
        "quantity": quantity,
        "quantity_decimal": _decimal_text(quantity),
        "tax_rates": [],
        "test_clock": None,
    }
    ctx.state.put(ii)
    if inv is not None:
        _attach_invoice_item(ctx, inv, ii)
    ctx.emit("invoiceitem.created", ii)
    return ctx.render(ii)


invoice_items_retrieve = retrieve_route(
    "/v1/invoiceitems/{id}", "invoiceitem", "invoiceitem", "_invoice_item_retrieve_params"
)


def _editable_item(ctx: Ctx) -> dict:
    ii = live_or_404(ctx, ctx.path_args["id"], "invoiceitem")
    inv = ctx.state.get(ii.get("invoice"), "invoice")
    if inv is not None and inv["status"] != "draft":
        raise invalid("id", "Invoice items on a finalized invoice cannot be modified or deleted.")
    return ii


@route("POST", "/v1/invoiceitems/{id}", "_invoice_item_update_params")
def invoice_items_update(ctx: Ctx):
    ii = _editable_item(ctx)
    p = ctx.params
    before = ctx.state.render(ii)
    if "description" in p:
        ii["description"] = p["description"] or None
    if "metadata" in p:
        ii["metadata"] = apply_metadata(ii["metadata"], p["metadata"])
    if "quantity" in p:
        ii["quantity"] = as_int(p, "quantity", minimum=0)
        ii["quantity_decimal"] = _decimal_text(ii["quantity"])
        unit = Decimal(ii["pricing"]["unit_amount_decimal"] or 0)
        ii["amount"] = ii["net_amount"] = to_minor(unit * ii["quantity"])
    if "amount" in p:
        ii["amount"] = ii["net_amount"] = as_int(p, "amount")
        ii["pricing"]["unit_amount_decimal"] = str(Decimal(ii["amount"]) / (ii["quantity"] or 1))
    if isinstance(p.get("period"), dict):
        ii["period"] = {
            "end": as_int(p["period"], "end", ii["period"]["end"]),
            "start": as_int(p["period"], "start", ii["period"]["start"]),
        }
    ctx.state.put(ii)
    _refresh_invoice_item_line(ctx, ii)
    emit_changes(ctx, ii, before, "invoiceitem.updated")
    return ctx.render(ii)


@route("DELETE", "/v1/invoiceitems/{id}", "_invoice_item_delete_params")
def invoice_items_delete(ctx: Ctx):
    ii = _editable_item(ctx)
    last = ctx.state.render(ii)
    _remove_invoice_item_line(ctx, ii)
    return tombstone(ctx, last, "invoiceitem.deleted")


@route("GET", "/v1/invoiceitems", "_invoice_item_list_params")
def invoice_items_list(ctx: Ctx):
    p = ctx.params
    items = [i for i in ctx.state.all("invoiceitem") if not i.get("deleted")]
    if p.get("customer"):
        items = [i for i in items if i["customer"] == p["customer"]]
    if p.get("invoice"):
        items = [i for i in items if i["invoice"] == p["invoice"]]
    if "pending" in p:
        pending = as_bool(p, "pending")
        items = [i for i in items if (i["invoice"] is None) == pending]
    return ctx.state.list_page(items, p, "/v1/invoiceitems", label="invoiceitem")


# checkout sessions ---------------------------------------------------------------------------------


def _line_items(state, session):
    items = state.meta[session["id"]].get("line_items", [])
    out = []
    for li in items:
        price = state.objects.get(li["price"])
        rendered = dict(li)
        rendered["price"] = state.render(price) if price else None
        out.append(rendered)
    return {
        "object": "list",
        "data": out,
        "has_more": False,
        "url": f"/v1/checkout/sessions/{session['id']}/line_items",
    }


INCLUDABLE["checkout.session"]["line_items"] = _line_items


@route("POST", "/v1/checkout/sessions", "checkout._session_create_params")
def checkout_sessions_create(ctx: Ctx):
    p = ctx.params
    mode = p.get("mode")
    if not mode:
        raise missing("mode")
    if mode not in ("payment", "setup", "subscription"):
        raise invalid("mode", "Invalid mode: must be one of payment, setup, or subscription")
    if as_bool(p, "allow_promotion_codes", False) and p.get("discounts"):
        raise invalid(
            "allow_promotion_codes",
            "You may only specify one of these parameters: allow_promotion_codes, discounts.",
        )
    ui_mode = p.get("ui_mode") or "hosted"
    if ui_mode == "hosted" and not p.get("success_url") and p.get("redirect_on_completion") != "never":
        raise missing("success_url")
    customer = p.get("customer") or None
    if customer:
        live_customer_param(ctx, customer)
        if p.get("customer_email"):
            raise invalid(
                "customer_email", "You may only specify one of these parameters: customer, customer_email."
            )
    currency = check_currency(p["currency"]) if p.get("currency") else None
    line_items = []
    amount = 0
    if mode in ("payment", "subscription"):
        items = p.get("line_items")
        if not items:
            raise missing("line_items")
        recurring_seen = False
        for i, spec in enumerate(items):
            name = f"line_items[{i}]"
            if not isinstance(spec, dict):
                raise invalid(name, "Invalid object")
            if not spec.get("price"):
                if spec.get("price_data"):
                    price = create_price(ctx, dict(spec["price_data"]), param_prefix=f"{name}[price_data]")
                else:
                    raise missing(f"{name}[price]")
            else:
                price = ctx.state.get(spec["price"], "price")
                if price is None:
                    raise no_such_param("price", spec["price"], f"{name}[price]")
            if not price["active"]:
                raise invalid(
                    f"{name}[price]",
                    "The price specified is inactive. This field only accepts active prices.",
                )
            metered = _is_metered(price)
            if metered and spec.get("quantity") not in (None, ""):
                raise invalid(
                    f"{name}[quantity]",
                    "Quantity should not be specified where usage_type is "
                    f"`metered`. Remove quantity from `{name}`.",
                )
            if not metered and spec.get("quantity") in (None, ""):
                raise invalid(f"{name}[quantity]", f"Quantity is required. Add `quantity` to `{name}`.")
            quantity = None if metered else as_int(spec, "quantity", minimum=0)
            if price["type"] == "recurring":
                if mode == "payment":
                    raise invalid(
                        f"{name}[price]",
                        "You specified `payment` mode but passed a recurring price. "
                        "Either switch to `subscription` mode or use only one-time prices.",
                    )
                recurring_seen = True
            if currency and price["currency"] != currency:
                raise invalid(f"{name}[price]", "All prices must use the session's currency.")
            currency = currency or price["currency"]
            subtotal = 0 if metered else to_minor(price_amount(ctx, price, Decimal(quantity)))
            amount += subtotal
            product = ctx.state.objects.get(price["product"], {})
            line_items.append(
                {
                    "id": new_id("li", 24),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": subtotal,
                    "amount_tax": 0,
                    "amount_total": subtotal,
                    "currency": price["currency"],
                    "description": product.get("name"),
                    "price": price["id"],
                    "quantity": quantity,
                }
            )
        if mode == "subscription" and not recurring_seen:
            raise invalid(
                "line_items",
                "You must specify at least one recurring price in `subscription` mode when using prices.",
            )
    elif not currency and not p.get("payment_method_types"):
        raise invalid(
            "currency",
            "You must provide `currency` when using `mode=setup` without "
            "`payment_method_types` (Checkout uses dynamic payment methods by default).",
        )
    now = ctx.now()
    sid = new_id("cs_test", 58)
    session = {
        "id": sid,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": as_bool(p, "allow_promotion_codes", None),
        "amount_subtotal": amount if mode != "setup" else None,
        "amount_total": amount if mode != "setup" else None,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": p.get("billing_address_collection") or None,
        "cancel_url": p.get("cancel_url") or None,
        "client_reference_id": p.get("client_reference_id") or None,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_account": None,
        "customer_creation": None if customer else ("always" if mode == "subscription" else "if_required"),
        "customer_details": None,
        "customer_email": p.get("customer_email") or None,
        "discounts": [],
        "expires_at": as_int(p, "expires_at", now + 86400),
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": p.get("locale") or None,
        "metadata": apply_metadata({}, p.get("metadata")),
        "mode": mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": p.get("payment_method_collection") or "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": p.get("payment_method_types") or ["card"],
        "payment_status": "no_payment_required" if mode == "setup" or amount == 0 else "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": p.get("success_url") or None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": f"https://checkout.stripe.com/c/pay/{sid}" if ui_mode == "hosted" else None,
        "wallet_options": None,
    }
    ctx.state.put(session)
    ctx.state.meta[sid]["line_items"] = line_items
    ctx.state.meta[sid]["subscription_data"] = p.get("subscription_data") or {}
    ctx.state.meta[sid]["setup_intent_data"] = p.get("setup_intent_data") or {}
    if mode == "setup":
        data = ctx.state.meta[sid]["setup_intent_data"]
        seti = new_setup_intent(
            ctx, customer=customer, metadata=data.get("metadata"), description=data.get("description")
        )
        session["setup_intent"] = seti["id"]
        ctx.state.put(session)
    return ctx.render(session)


checkout_sessions_retrieve = retrieve_route(
    "/v1/checkout/sessions/{id}", "checkout.session", "checkout.session", "checkout._session_retrieve_params"
)


@route("GET", "/v1/checkout/sessions/{id}/line_items", "checkout._session_list_line_items_params")
def checkout_sessions_line_items(ctx: Ctx):
    session = get_or_404(ctx, ctx.path_args["id"], "checkout.session", "checkout.session")
    full = _line_items(ctx.state, session)
    return ctx.state.list_page(full["data"], ctx.params, full["url"], ordered=True, label="item")


@route("POST", "/v1/checkout/sessions/{id}/expire", "checkout._session_expire_params")
def checkout_sessions_expire(ctx: Ctx):
    session = get_or_404(ctx, ctx.path_args["id"], "checkout.session", "checkout.session")
    if session["status"] != "open":
        raise invalid("session", "Only Checkout Sessions with a status of `open` can be expired.")
    session["status"] = "expired"
    ctx.state.put(session)
    ctx.emit("checkout.session.expired", session, {"status": "open"})
    return ctx.render(session)


@route("GET", "/v1/checkout/sessions", "checkout._session_list_params")
def checkout_sessions_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("checkout.session")
    for key in ("customer", "status", "subscription", "payment_intent"):
        if p.get(key):
            items = [s for s in items if s.get(key) == p[key]]
    return ctx.state.list_page(items, p, "/v1/checkout/sessions", label="checkout.session")


# test controls (called through StripeServer) -------------------------------------------------------

CARD_NUMBERS = {
    "visa": "4242424242424242",
    "mastercard": "5555555555554444",
    "charge_fails": "4000000000000341",
    "declined": "4000000000000002",
}


def card_number(card: str) -> str:
    if card in CARD_NUMBERS:
        return CARD_NUMBERS[card]
    if card in _TEST_CARDS:
        return card
    raise ValueError(f"unknown test card {card!r}; use one of {sorted(CARD_NUMBERS)} or a test card number")


def complete_checkout(ctx: Ctx, session_id: str, card: str = "visa", email: str | None = None) -> dict:
    """What happens when the customer fills in the hosted Checkout page and submits."""
    session = ctx.state.get(session_id, "checkout.session")
    if session is None:
        raise no_such("checkout.session", session_id)
    if session["status"] != "open":
        raise invalid("session", f"This Checkout Session is {session['status']}, not open.")
    pm = new_payment_method(ctx, card_number(card), billing_details={"email": email})
    behaviour = payment_method_behaviour(ctx, pm["id"])
    if behaviour.startswith("declined"):
        raise card_declined()
    customer_id = session["customer"]
    if customer_id is None and (
        session["mode"] == "subscription" or session["customer_creation"] == "always"
    ):
        cus_email = email or session.get("customer_email")
        sub_ctx = Ctx(
            ctx.state,
            ctx.server,
            "POST",
            "/v1/customers",
            {"email": cus_email} if cus_email else {},
            {},
            ctx.request_id,
            None,
            "v1",
            ctx.token,
        )
        from .res_core import customers_create

        customer_id = customers_create(sub_ctx)["id"]
    cus = ctx.state.objects.get(customer_id) if customer_id else None
    if cus is not None:
        attach_payment_method(ctx, pm, cus)
    before = ctx.state.render(session)
    if session["mode"] == "setup":
        seti = ctx.state.objects[session["setup_intent"]]
        seti["payment_method"] = pm["id"]
        seti["customer"] = customer_id
        seti["status"] = "succeeded"
        ctx.state.put(seti)
        ctx.emit("setup_intent.succeeded", seti)
    elif session["mode"] == "subscription":
        data = ctx.state.meta[session["id"]]["subscription_data"]
        items = [
            {
                "price": li["price"],
                **({"quantity": str(li["quantity"])} if li["quantity"] is not None else {}),
            }
            for li in ctx.state.meta[session["id"]]["line_items"]
        ]
        params = {
            "customer": customer_id,
            "items": items,
            "default_payment_method": pm["id"],
            "payment_behavior": "error_if_incomplete",
        }
        if data.get("metadata"):
            params["metadata"] = data["metadata"]
        if data.get("trial_period_days"):
            params["trial_period_days"] = data["trial_period_days"]
        if data.get("description"):
            params["description"] = data["description"]
        sub = create_subscription(ctx, params)
        session["subscription"] = sub["id"]
        session["invoice"] = sub["latest_invoice"]
    else:
        session["payment_intent"] = new_id("pi", 24)
    session["status"] = "complete"
    if session["payment_status"] == "unpaid":
        session["payment_status"] = "paid"
    session["customer"] = customer_id
    session["customer_details"] = {
        "address": None,
        "business_name": None,
        "email": (cus or {}).get("email") or email or session.get("customer_email"),
        "individual_name": None,
        "name": (cus or {}).get("name"),
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    ctx.state.put(session)
    ctx.emit("checkout.session.completed", session, diff(before, ctx.state.render(session)))
    return session


def _cycle_lines(
    ctx: Ctx, sub: dict, items: list[dict], end: int, next_end: int, *, final: bool
) -> list[dict]:
    """The lines that end a period at `end`: each metered item's usage since its period started, and
    (unless the subscription ends here) each licensed item for the next period."""
    from .res_meters import usage_for

    lines = []
    for item in items:
        price = ctx.state.objects[item["price"]]
        if _is_metered(price):
            start = item["current_period_start"]
            qty = usage_for(ctx.state, sub["customer"], price["recurring"]["meter"], start, end)
            qty = max(qty, Decimal(0))
            amount = to_minor(price_amount(ctx, price, qty))
            lines.append(_subscription_line(ctx, sub, item, price, qty, amount, start, end))
        elif not final:
            qty = item.get("quantity", 0)
            amount = to_minor(price_amount(ctx, price, Decimal(qty)))
            lines.append(_subscription_line(ctx, sub, item, price, qty, amount, end, next_end))
    return lines


def _pending_items(ctx: Ctx, customer_id: str, sub: dict | None, currency: str) -> list[dict]:
    """The customer's pending invoice items that the subscription's next invoice takes (those of no
    subscription or of this one, in its currency), oldest first."""
    out = []
    for ii in ctx.state.all("invoiceitem"):
        if ii.get("deleted") or ii["customer"] != customer_id or ii["invoice"] is not None:
            continue
        ii_sub = ((ii.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        if ii_sub not in (None, sub["id"] if sub else None) or ii["currency"] != currency:
            continue
        out.append(ii)
    return out


def _bill_period(ctx: Ctx, sub: dict, *, final: bool = False) -> dict | None:
    """Invoice the current period: metered usage for it, licensed items for the next one, and the
    customer's pending invoice items."""
    cus = ctx.state.objects.get(sub["customer"])
    if cus is None or cus.get("deleted"):
        cus = {"id": sub["customer"], "invoice_settings": {}}
    items = _items_of(ctx, sub)
    if not items:
        return None
    start = min(i["current_period_start"] for i in items)
    end = max(i["current_period_end"] for i in items)
    if final:
        end = min(end, ctx.now())
    interval = ctx.state.meta[sub["id"]].get("interval") or ("month", 1)
    next_end = add_interval(end, interval[0], interval[1])
    inv = new_invoice(
        ctx,
        cus,
        currency=sub["currency"],
        subscription=sub,
        billing_reason="subscription_cycle" if not final else "subscription_update",
        collection_method=sub["collection_method"],
        days_until_due=sub["days_until_due"],
        auto_advance=True,
        period=(start, end),
    )
    for line in _cycle_lines(ctx, sub, items, end, next_end, final=final):
        add_line(ctx, inv, line)
    for ii in _pending_items(ctx, sub["customer"], sub, sub["currency"]):
        _attach_invoice_item(ctx, inv, ii)
    for item in items:
        if not final:
            item["current_period_start"] = end
            item["current_period_end"] = next_end
            ctx.state.put(item)
    ctx.emit("invoice.created", inv)
    sub["latest_invoice"] = inv["id"]
    ctx.state.put(sub)
    finalize_invoice(ctx, inv)
    if inv["status"] == "open" and sub["collection_method"] == "charge_automatically":
        outcome = attempt_payment(ctx, inv)
        if outcome == "no_payment_method" and sub["status"] == "active":
            set_subscription_status(ctx, sub, "past_due")
    return inv


def advance_subscription(ctx: Ctx, sub_id: str) -> dict | None:
    """End the subscription's current period the way Stripe does at a renewal: a trial converts, metered
    usage of the period is invoiced, a `cancel_at_period_end` subscription is canceled."""
    sub = ctx.state.get(sub_id, "subscription")
    if sub is None:
        raise no_such("subscription", sub_id)
    if sub["status"] == "canceled":
        raise invalid("subscription", "The subscription is canceled.")
    before = ctx.state.render(sub)
    if sub["status"] == "trialing":
        sub["status"] = "active"
    if sub["cancel_at_period_end"]:
        inv = _bill_period(ctx, sub, final=True)
        cancel_subscription(ctx, sub, reason="cancellation_requested")
        return inv
    inv = _bill_period(ctx, sub)
    emit_changes(ctx, sub, before, "customer.subscription.updated")
    return inv


def run_invoice_automation(ctx: Ctx) -> list[str]:
    """Stripe's automatic collection, run now: finalize auto-advancing drafts and charge open
    auto-advancing invoices. Returns the ids of the invoices touched."""
    touched = []
    for inv in list(ctx.state.all("invoice")):
        if inv.get("deleted") or not inv.get("auto_advance"):
            continue
        if inv["status"] == "draft":
            finalize_invoice(ctx, inv)
            touched.append(inv["id"])
        if inv["status"] == "open" and inv["collection_method"] == "charge_automatically":
            attempt_payment(ctx, inv)
            touched.append(inv["id"])
    return touched


@route("GET", "/v1/invoice_payments", "_invoice_payment_list_params")
def invoice_payments_list(ctx: Ctx):
    p = ctx.params
    payments = []
    for inv in ctx.state.all("invoice"):
        if inv.get("deleted") or (p.get("invoice") and inv["id"] != p["invoice"]):
            continue
        payments.extend(dict(x) for x in ctx.state.meta[inv["id"]].get("payments", []))
    if p.get("status"):
        payments = [x for x in payments if x["status"] == p["status"]]
    return ctx.state.list_page(payments, p, "/v1/invoice_payments", label="invoice_payment")


# invoice previews ----------------------------------------------------------------------------------

UPCOMING_NONE = (
    "There is no upcoming invoice on the specified customer to preview. Only customers with active "
    "subscriptions or pending invoice items have invoices that can be previewed."
)


def _upcoming_none() -> StripeError:
    return StripeError(404, UPCOMING_NONE, code="invoice_upcoming_none")


def _preview_items(ctx: Ctx, sub: dict, changes) -> list[dict]:
    """Copies of the subscription's items with `subscription_details[items]` applied (nothing stored):
    `id` with `deleted`, a new `price` or `quantity`; without `id`, a new item for the current period."""
    items = [copy.deepcopy(i) for i in _items_of(ctx, sub)]
    if not changes:
        return items
    if not isinstance(changes, list):
        raise invalid("subscription_details[items]", "Invalid array")
    for idx, spec in enumerate(changes):
        name = f"subscription_details[items][{idx}]"
        if not isinstance(spec, dict):
            raise invalid(name, "Invalid object")
        if spec.get("id"):
            item = next((i for i in items if i["id"] == spec["id"]), None)
            if item is None:
                raise no_such_param("subscription_item", spec["id"], f"{name}[id]")
            if as_bool(spec, "deleted", False):
                items.remove(item)
                continue
            if spec.get("price") or spec.get("price_data") or spec.get("plan"):
                item["price"] = _resolve_item_price(ctx, spec, name, None)["id"]
            price = ctx.state.objects[item["price"]]
            if _is_metered(price):
                item.pop("quantity", None)
            elif "quantity" in spec:
                item["quantity"] = _item_quantity(spec, price, name)
            continue
        price = _resolve_item_price(ctx, spec, name, None)
        if any(i["price"] == price["id"] for i in items):
            raise invalid(name, f"Cannot add multiple subscription items with the same price: {price['id']}")
        anchor = items[0] if items else None
        start = anchor["current_period_start"] if anchor else ctx.now()
        end = anchor["current_period_end"] if anchor else add_interval(start, price["recurring"]["interval"])
        item = {
            "id": new_id("si", 14),
            "object": "subscription_item",
            "current_period_end": end,
            "current_period_start": start,
            "metadata": apply_metadata({}, spec.get("metadata")),
            "price": price["id"],
            "subscription": sub["id"],
        }
        quantity = _item_quantity(spec, price, name)
        if quantity is not None:
            item["quantity"] = quantity
        items.append(item)
    if not items:
        raise invalid("subscription_details[items]", "A subscription must have at least one active item.")
    return items


def _new_subscription_lines(ctx: Ctx, cus: dict, details: dict) -> tuple[list[dict], int, str]:
    """The first invoice of a subscription made from `subscription_details[items]`: licensed items for
    the first period, metered items at zero. Returns (lines, start, currency)."""
    start = as_int(details, "start_date", ctx.now())
    resolved = []
    for idx, spec in enumerate(details["items"]):
        name = f"subscription_details[items][{idx}]"
        if not isinstance(spec, dict):
            raise invalid(name, "Invalid object")
        price = _resolve_item_price(ctx, spec, name, cus.get("currency"))
        resolved.append((price, _item_quantity(spec, price, name), spec.get("metadata")))
    currencies = {price["currency"] for price, _, _ in resolved}
    if len(currencies) > 1:
        raise invalid(
            "subscription_details[items]", "All prices on a subscription must have the same currency."
        )
    first = resolved[0][0]["recurring"]
    end = add_interval(start, first["interval"], first.get("interval_count") or 1)
    virtual = {"id": None, "customer": cus["id"]}
    lines = []
    for price, quantity, metadata in resolved:
        item = {"id": None, "metadata": apply_metadata({}, metadata)}
        qty = quantity or 0
        amount = to_minor(price_amount(ctx, price, Decimal(qty)))
        lines.append(_subscription_line(ctx, virtual, item, price, qty, amount, start, end))
    return lines, start, resolved[0][0]["currency"]


def _preview_invoice_item_lines(ctx: Ctx, specs, currency: str | None) -> list[dict]:
    """Lines for `invoice_items`: an existing pending item (`invoiceitem`, its fields overridden), or a
    new one from `amount`, `price`, `price_data`, or `unit_amount[_decimal]` with `currency`."""
    if not isinstance(specs, list):
        raise invalid("invoice_items", "Invalid array")
    lines = []
    for idx, spec in enumerate(specs):
        name = f"invoice_items[{idx}]"
        if not isinstance(spec, dict):
            raise invalid(name, "Invalid object")
        quantity = as_int(spec, "quantity", 1, minimum=0)
        price = None
        if spec.get("invoiceitem"):
            ii = ctx.state.get(spec["invoiceitem"], "invoiceitem")
            if ii is None or ii.get("deleted"):
                raise no_such_param("invoiceitem", spec["invoiceitem"], f"{name}[invoiceitem]")
            ii = copy.deepcopy(ii)
            if "quantity" in spec:
                ii["quantity"] = quantity
                ii["amount"] = to_minor(Decimal(ii["pricing"]["unit_amount_decimal"] or 0) * quantity)
            if "amount" in spec:
                ii["amount"] = as_int(spec, "amount")
            if spec.get("description"):
                ii["description"] = spec["description"]
            lines.append(_invoice_item_line(ctx, ii))
            continue
        if spec.get("price"):
            price = ctx.state.get(spec["price"], "price")
            if price is None:
                raise no_such_param("price", spec["price"], f"{name}[price]")
            item_currency, amount = price["currency"], to_minor(price_amount(ctx, price, Decimal(quantity)))
            unit = price["unit_amount_decimal"]
        elif isinstance(spec.get("price_data"), dict):
            data = spec["price_data"]
            product = ctx.state.get(data.get("product"), "product")
            if product is None:
                raise no_such_param("product", str(data.get("product")), f"{name}[price_data][product]")
            item_currency = check_currency(data.get("currency"), f"{name}[price_data][currency]")
            unit_dec = as_decimal(
                data.get("unit_amount_decimal", data.get("unit_amount", 0)), f"{name}[price_data]"
            )
            amount, unit = to_minor(unit_dec * quantity), format(unit_dec.normalize(), "f")
        else:
            if not spec.get("currency") and not currency:
                raise missing(f"{name}[currency]")
            item_currency = check_currency(spec.get("currency") or currency, f"{name}[currency]")
            if spec.get("amount") not in (None, ""):
                amount = as_int(spec, "amount")
                unit = format((Decimal(amount) / (quantity or 1)).normalize(), "f")
            elif spec.get("unit_amount_decimal") not in (None, "") or spec.get("unit_amount") not in (
                None,
                "",
            ):
                raw = spec.get("unit_amount_decimal", spec.get("unit_amount"))
                unit_dec = as_decimal(raw, f"{name}[unit_amount_decimal]")
                amount, unit = to_minor(unit_dec * quantity), format(unit_dec.normalize(), "f")
            else:
                raise missing(f"{name}[amount]")
        if currency and item_currency != currency:
            raise invalid(
                f"{name}[currency]", "The currency of the invoice item must match the invoice's currency."
            )
        now = ctx.now()
        period = spec.get("period") if isinstance(spec.get("period"), dict) else {}
        product = ctx.state.objects.get(price["product"], {}) if price else {}
        ii = {
            "id": new_id("ii", 24),
            "amount": amount,
            "currency": item_currency,
            "description": spec.get("description") or product.get("name"),
            "discountable": as_bool(spec, "discountable", True),
            "metadata": apply_metadata({}, spec.get("metadata")),
            "parent": None,
            "period": {"end": as_int(period, "end", now), "start": as_int(period, "start", now)},
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]} if price else None,
                "type": "price_details",
                "unit_amount_decimal": unit,
            },
            "quantity": quantity,
        }
        lines.append(_invoice_item_line(ctx, ii))
    return lines


@route("POST", "/v1/invoices/create_preview", "_invoice_create_preview_params")
def invoices_create_preview(ctx: Ctx):
    """The invoice a subscription (or a subscription about to be made, or invoice items) would produce
    next: `id` "upcoming_in_...", nothing stored. For a subscription, its current period ends with
    metered usage so far priced by each item's price, licensed items for the next period, the customer's
    pending invoice items, and the billing credits that would apply at finalization."""
    p = ctx.params
    details = p.get("subscription_details") if isinstance(p.get("subscription_details"), dict) else {}
    if p.get("schedule"):
        raise no_such_param("subscription_schedule", p["schedule"], "schedule")
    if p.get("schedule_details"):
        raise invalid(
            "schedule_details", "Subscription schedules are not modelled by the local Stripe server."
        )
    sub = None
    if p.get("subscription"):
        sub = ctx.state.get(p["subscription"], "subscription")
        if sub is None:
            raise no_such_param("subscription", p["subscription"], "subscription")
        if p.get("customer") and p["customer"] != sub["customer"]:
            raise invalid("subscription", "The subscription does not belong to the customer given.")
    customer_id = p.get("customer") or (sub["customer"] if sub else None)
    if p.get("customer_account") and not customer_id:
        raise no_such_param("account", p["customer_account"], "customer_account")
    if not customer_id:
        raise missing("customer")
    cus = live_customer_param(ctx, customer_id)
    if sub is None and not details.get("items") and not p.get("invoice_items"):
        raise invalid(
            "subscription",
            "You must pass `subscription`, `subscription_details[items]`, `schedule`, `schedule_details"
            "[phases]` or `invoice_items` with `customer` to preview an invoice.",
        )
    now = ctx.now()
    lines: list[dict] = []
    period = (now, now)
    created = now
    billing_reason = "manual"
    currency = check_currency(p["currency"]) if p.get("currency") else None
    collection, days_until_due = "charge_automatically", None
    if sub is not None:
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise _upcoming_none()
        items = _preview_items(ctx, sub, details.get("items"))
        final = as_bool(details, "cancel_at_period_end", sub["cancel_at_period_end"]) or as_bool(
            details, "cancel_now", False
        )
        start = min(i["current_period_start"] for i in items)
        end = max(i["current_period_end"] for i in items)
        if as_bool(details, "cancel_now", False):
            end = now
        interval = ctx.state.meta[sub["id"]].get("interval") or ("month", 1)
        lines = _cycle_lines(ctx, sub, items, end, add_interval(end, interval[0], interval[1]), final=final)
        period, created, billing_reason = (start, end), end, "upcoming"
        currency = sub["currency"]
        collection, days_until_due = sub["collection_method"], sub["days_until_due"]
    elif details.get("items"):
        lines, start, currency = _new_subscription_lines(ctx, cus, details)
        period, created, billing_reason = (start, start), start, "subscription_create"
    currency = currency or cus.get("currency") or "usd"
    for ii in _pending_items(ctx, cus["id"], sub, currency):
        overridden = any(
            isinstance(s, dict) and s.get("invoiceitem") == ii["id"] for s in p.get("invoice_items") or []
        )
        if not overridden:
            lines.append(_invoice_item_line(ctx, ii))
    if p.get("invoice_items"):
        lines.extend(_preview_invoice_item_lines(ctx, p["invoice_items"], currency))
    if not lines:
        raise _upcoming_none()
    inv = new_invoice(
        ctx,
        cus,
        currency=currency,
        subscription=sub,
        billing_reason=billing_reason,
        collection_method=collection,
        days_until_due=days_until_due,
        period=period,
        store=False,
    )
    inv["id"] = new_id("upcoming_in", 24)
    inv["created"] = created
    if sub is not None and details.get("metadata") not in (None, ""):
        inv["parent"]["subscription_details"]["metadata"] = apply_metadata(
            sub["metadata"], details["metadata"], "subscription_details[metadata]"
        )
    for line in lines:
        line["invoice"] = inv["id"]
        inv["lines"]["data"].append(line)
    res_credits.apply_credits(ctx, inv, record=False)
    recalc(inv)
    if collection == "charge_automatically" and inv["amount_due"] > 0:
        inv["next_payment_attempt"] = created + 3600
    return ctx.render(inv)
