"""Customers, products, prices, payment methods, setup intents and events."""

from __future__ import annotations

import secrets
from decimal import Decimal

from . import search as search_lang
from .errors import StripeError, invalid, missing, no_such, no_such_param
from .routing import Ctx, route
from .state import INCLUDABLE, apply_metadata, as_bool, as_decimal, as_int, diff, new_id, require_str

CURRENCIES = frozenset(
    "usd eur gbp cad aud jpy chf sek nok dkk nzd sgd hkd mxn brl inr pln czk huf ron bgn".split()  # noqa: SIM905
)


def check_currency(value, param: str = "currency") -> str:
    if not isinstance(value, str) or value.lower() not in CURRENCIES:
        raise invalid(
            param,
            f"Invalid currency: {value}. Stripe currently supports these currencies: "
            + ", ".join(sorted(CURRENCIES)),
        )
    return value.lower()


def get_or_404(ctx: Ctx, oid: str, kind: str, label: str) -> dict:
    obj = ctx.state.get(oid, kind)
    if obj is None:
        raise no_such(label, oid)
    return obj


def live_or_404(ctx: Ctx, oid: str, kind: str, label: str | None = None) -> dict:
    """A stored object that is not deleted (a deleted one answers 404 like a missing one)."""
    label = label or kind
    obj = get_or_404(ctx, oid, kind, label)
    if obj.get("deleted"):
        raise no_such(label, oid)
    return obj


def live_customer_param(ctx: Ctx, customer_id: str, param: str = "customer") -> dict:
    """The live customer a body parameter names (Stripe answers 400 for a missing or deleted one)."""
    cus = ctx.state.get(customer_id, "customer")
    if cus is None or cus.get("deleted"):
        raise no_such_param("customer", customer_id, param)
    return cus


def retrieve_route(path: str, kind: str, label: str, params: str, *, live: bool = False):
    """Register `GET path` answering the stored `kind` object named by `{id}` (404 `No such <label>`;
    `live`: a deleted one too)."""
    lookup = live_or_404 if live else get_or_404

    def retrieve(ctx: Ctx):
        return ctx.render(lookup(ctx, ctx.path_args["id"], kind, label))

    return route("GET", path, params)(retrieve)


def search_route(kind: str, resource: str, params: str):
    """Register `GET /v1/<resource>/search` over the stored `kind` objects."""
    url = f"/v1/{resource}/search"

    def search_handler(ctx: Ctx):
        return search(ctx, kind, resource, url)

    return route("GET", url, params)(search_handler)


def emit_changes(ctx: Ctx, obj: dict, before: dict, event_type: str, *, ignore: tuple = ()) -> None:
    """Emit `event_type` with the fields that changed since `before` (a rendered copy), if any."""
    changed = diff(before, ctx.state.render(obj))
    for name in ignore:
        changed.pop(name, None)
    if changed:
        ctx.emit(event_type, obj, changed)


def tombstone(ctx: Ctx, last: dict, event_type: str) -> dict:
    """Replace the object `last` (its final rendered state) by Stripe's deleted stub and emit
    `event_type`; returns the stub."""
    stub = {"id": last["id"], "object": last["object"], "deleted": True}
    ctx.state.put(stub)
    ctx.state.emit(event_type, last, None, ctx.request_info())
    return dict(stub)


def search(ctx: Ctx, kind: str, resource: str, url: str) -> dict:
    query = require_str(ctx.params, "query")
    joiner, clauses = search_lang.parse(query, resource)
    hits = []
    for oid in ctx.state.types.get(kind, []):
        snapshot = ctx.state.searchable(oid)
        if snapshot is None or snapshot.get("deleted") or ctx.state.objects[oid].get("deleted"):
            continue
        if search_lang.matches(snapshot, joiner, clauses, resource):
            hits.append(ctx.state.objects[oid])
    return ctx.state.search_page(hits, ctx.params, url)


# customers -----------------------------------------------------------------------------------------


def _customer_sources(state, cus):
    return {
        "object": "list",
        "data": [],
        "has_more": False,
        "total_count": 0,
        "url": f"/v1/customers/{cus['id']}/sources",
    }


def _customer_subscriptions(state, cus):
    subs = [
        s
        for s in state.newest_first(state.all("subscription"))
        if s["customer"] == cus["id"] and s["status"] != "canceled"
    ]
    return {
        "object": "list",
        "data": [state.render(s) for s in subs[:10]],
        "has_more": len(subs) > 10,
        "total_count": len(subs),
        "url": f"/v1/customers/{cus['id']}/subscriptions",
    }


def _customer_tax_ids(state, cus):
    return {
        "object": "list",
        "data": [],
        "has_more": False,
        "total_count": 0,
        "url": f"/v1/customers/{cus['id']}/tax_ids",
    }


INCLUDABLE["customer"].update(
    {
        "sources": _customer_sources,
        "subscriptions": _customer_subscriptions,
        "tax_ids": _customer_tax_ids,
        "cash_balance": lambda state, cus: None,
        "invoice_credit_balance": lambda state, cus: {},
    }
)

_CUSTOMER_FIELDS = (
    "address",
    "description",
    "email",
    "name",
    "phone",
    "shipping",
    "business_name",
    "individual_name",
)


def _customer_default_pm(ctx: Ctx, cus: dict, pm_id) -> str | None:
    if pm_id in (None, ""):
        return None
    pm = materialize_payment_method(ctx, pm_id, "invoice_settings[default_payment_method]")
    if pm.get("customer") != cus["id"]:
        raise invalid(
            "invoice_settings[default_payment_method]",
            f"The customer does not have a payment method with the ID {pm['id']}. The payment method must be "
            "attached to the customer.",
        )
    return pm["id"]


def _apply_customer(ctx: Ctx, cus: dict, params: dict) -> None:
    for name in _CUSTOMER_FIELDS:
        if name in params:
            cus[name] = params[name] or None
    if "metadata" in params:
        cus["metadata"] = apply_metadata(cus.get("metadata"), params["metadata"])
    if "balance" in params:
        cus["balance"] = as_int(params, "balance", 0)
    if "preferred_locales" in params:
        cus["preferred_locales"] = params["preferred_locales"] or []
    if "tax_exempt" in params:
        cus["tax_exempt"] = params["tax_exempt"] or "none"
    if "invoice_prefix" in params:
        cus["invoice_prefix"] = params["invoice_prefix"]
    settings = params.get("invoice_settings")
    if isinstance(settings, dict):
        current = cus["invoice_settings"]
        if "default_payment_method" in settings:
            current["default_payment_method"] = _customer_default_pm(
                ctx, cus, settings["default_payment_method"]
            )
        for key in ("custom_fields", "footer", "rendering_options"):
            if key in settings:
                current[key] = settings[key] or None


@route("POST", "/v1/customers", "_customer_create_params")
def customers_create(ctx: Ctx):
    p = ctx.params
    cus = {
        "id": new_id("cus", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": ctx.now(),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    attach = p.get("payment_method")
    settings = p.get("invoice_settings") if isinstance(p.get("invoice_settings"), dict) else {}
    pending_default = settings.get("default_payment_method")
    rest = dict(p)
    if pending_default is not None:
        rest["invoice_settings"] = {k: v for k, v in settings.items() if k != "default_payment_method"}
    _apply_customer(ctx, cus, rest)
    ctx.state.put(cus)
    if attach:
        pm = materialize_payment_method(ctx, attach, "payment_method")
        _attach(ctx, pm, cus)
    if pending_default:
        cus["invoice_settings"]["default_payment_method"] = _customer_default_pm(ctx, cus, pending_default)
    ctx.emit("customer.created", cus)
    return ctx.render(cus)


customers_search = search_route("customer", "customers", "_customer_search_params")


customers_retrieve = retrieve_route("/v1/customers/{id}", "customer", "customer", "_customer_retrieve_params")


def live_customer(ctx: Ctx, oid: str) -> dict:
    return live_or_404(ctx, oid, "customer")


@route("POST", "/v1/customers/{id}", "_customer_update_params")
def customers_update(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    before = ctx.state.render(cus)
    _apply_customer(ctx, cus, ctx.params)
    ctx.state.put(cus)
    emit_changes(ctx, cus, before, "customer.updated")
    return ctx.render(cus)


@route("DELETE", "/v1/customers/{id}", "_customer_delete_params")
def customers_delete(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    from .res_billing import cancel_subscription

    for sub in ctx.state.all("subscription"):
        if sub["customer"] == cus["id"] and sub["status"] != "canceled":
            cancel_subscription(ctx, sub, reason="cancellation_requested")
    return tombstone(ctx, ctx.state.render(cus), "customer.deleted")


@route("GET", "/v1/customers", "_customer_list_params")
def customers_list(ctx: Ctx):
    items = [c for c in ctx.state.all("customer") if not c.get("deleted")]
    if ctx.params.get("email"):
        items = [c for c in items if c.get("email") == ctx.params["email"]]
    return ctx.state.list_page(items, ctx.params, "/v1/customers", label="customer")


@route("GET", "/v1/customers/{id}/payment_methods", "_customer_list_payment_methods_params")
def customers_payment_methods(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    items = [pm for pm in ctx.state.all("payment_method") if pm.get("customer") == cus["id"]]
    if ctx.params.get("type"):
        items = [pm for pm in items if pm["type"] == ctx.params["type"]]
    return ctx.state.list_page(
        items, ctx.params, f"/v1/customers/{cus['id']}/payment_methods", label="payment_method"
    )


@route("GET", "/v1/customers/{id}/payment_methods/{pm}", "_customer_retrieve_payment_method_params")
def customers_payment_method(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    pm = ctx.state.get(ctx.path_args["pm"], "payment_method")
    if pm is None or pm.get("customer") != cus["id"]:
        raise no_such("PaymentMethod", ctx.path_args["pm"])
    return ctx.render(pm)


# products ------------------------------------------------------------------------------------------


@route("POST", "/v1/products", "_product_create_params")
def products_create(ctx: Ctx):
    p = ctx.params
    name = require_str(p, "name")
    pid = p.get("id") or new_id("prod", 14)
    existing = ctx.state.get(pid, "product")
    if existing is not None and not existing.get("deleted"):
        raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
    now = ctx.now()
    prod = {
        "id": pid,
        "object": "product",
        "active": as_bool(p, "active", True),
        "attributes": [],
        "created": now,
        "default_price": None,
        "description": p.get("description") or None,
        "images": p.get("images") or [],
        "livemode": False,
        "marketing_features": p.get("marketing_features") or [],
        "metadata": apply_metadata({}, p.get("metadata")),
        "name": name,
        "package_dimensions": p.get("package_dimensions") or None,
        "shippable": as_bool(p, "shippable", None),
        "statement_descriptor": p.get("statement_descriptor") or None,
        "tax_code": p.get("tax_code") or None,
        "type": p.get("type") or "service",
        "unit_label": p.get("unit_label") or None,
        "updated": now,
        "url": p.get("url") or None,
    }
    ctx.state.put(prod)
    ctx.emit("product.created", prod)
    if isinstance(p.get("default_price_data"), dict):
        data = dict(p["default_price_data"])
        data["product"] = pid
        price = create_price(ctx, data, param_prefix="default_price_data")
        prod["default_price"] = price["id"]
        ctx.state.put(prod)
    return ctx.render(prod)


products_search = search_route("product", "products", "_product_search_params")


products_retrieve = retrieve_route("/v1/products/{id}", "product", "product", "_product_retrieve_params")


@route("POST", "/v1/products/{id}", "_product_update_params")
def products_update(ctx: Ctx):
    prod = live_or_404(ctx, ctx.path_args["id"], "product")
    p = ctx.params
    before = ctx.state.render(prod)
    for name in (
        "description",
        "statement_descriptor",
        "tax_code",
        "unit_label",
        "url",
        "package_dimensions",
    ):
        if name in p:
            prod[name] = p[name] or None
    if "name" in p:
        prod["name"] = require_str(p, "name")
    if "active" in p:
        prod["active"] = as_bool(p, "active")
    if "shippable" in p:
        prod["shippable"] = as_bool(p, "shippable")
    if "images" in p:
        prod["images"] = p["images"] or []
    if "marketing_features" in p:
        prod["marketing_features"] = p["marketing_features"] or []
    if "metadata" in p:
        prod["metadata"] = apply_metadata(prod["metadata"], p["metadata"])
    if "default_price" in p:
        if p["default_price"] in ("", None):
            prod["default_price"] = None
        else:
            price = ctx.state.require(p["default_price"], "price", "default_price")
            if price["product"] != prod["id"]:
                raise invalid("default_price", "The default price must belong to this product.")
            if not price["active"]:
                raise invalid("default_price", "The default price must be active.")
            prod["default_price"] = price["id"]
    prod["updated"] = ctx.now()
    ctx.state.put(prod)
    emit_changes(ctx, prod, before, "product.updated", ignore=("updated",))
    return ctx.render(prod)


@route("DELETE", "/v1/products/{id}", "_product_delete_params")
def products_delete(ctx: Ctx):
    prod = live_or_404(ctx, ctx.path_args["id"], "product")
    if any(pr["product"] == prod["id"] for pr in ctx.state.all("price")):
        raise invalid("id", "This product cannot be deleted because it has one or more user-created prices.")
    return tombstone(ctx, ctx.state.render(prod), "product.deleted")


@route("GET", "/v1/products", "_product_list_params")
def products_list(ctx: Ctx):
    p = ctx.params
    items = [x for x in ctx.state.all("product") if not x.get("deleted")]
    if "active" in p:
        active = as_bool(p, "active")
        items = [x for x in items if x["active"] == active]
    if p.get("ids"):
        ids = set(p["ids"] if isinstance(p["ids"], list) else [p["ids"]])
        items = [x for x in items if x["id"] in ids]
    if p.get("url"):
        items = [x for x in items if x.get("url") == p["url"]]
    return ctx.state.list_page(items, p, "/v1/products", label="product")


# prices --------------------------------------------------------------------------------------------


def _price_tiers(state, price):
    return state.meta[price["id"]].get("tiers")


def _price_currency_options(state, price):
    return {
        price["currency"]: {
            "custom_unit_amount": None,
            "tax_behavior": price["tax_behavior"],
            "unit_amount": price["unit_amount"],
            "unit_amount_decimal": price["unit_amount_decimal"],
        }
    }


INCLUDABLE["price"].update({"tiers": _price_tiers, "currency_options": _price_currency_options})

INTERVALS = ("day", "week", "month", "year")


def _decimal_str(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _amounts(p: dict, pname, required: bool) -> tuple[int | None, str | None]:
    has_int = "unit_amount" in p and p["unit_amount"] != ""
    has_dec = "unit_amount_decimal" in p and p["unit_amount_decimal"] != ""
    if has_int and has_dec:
        raise invalid(
            pname("unit_amount_decimal"),
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
        )
    if has_int:
        amount = as_int(p, "unit_amount", minimum=0)
        return amount, str(amount)
    if has_dec:
        dec = as_decimal(p["unit_amount_decimal"], pname("unit_amount_decimal"))
        if dec < 0:
            raise invalid(pname("unit_amount_decimal"), "This value must be greater than or equal to 0.")
        whole = int(dec) if dec == dec.to_integral_value() else None
        return whole, _decimal_str(dec)
    if required:
        raise missing(pname("unit_amount"))
    return None, None


def _tiers(p: dict, pname) -> list[dict]:
    tiers = p.get("tiers")
    if not tiers:
        raise missing(pname("tiers"))
    if not isinstance(tiers, list):
        raise invalid(pname("tiers"), "Invalid array")
    out = []
    previous = 0
    for i, tier in enumerate(tiers):
        name = f"{pname('tiers')}[{i}]"
        if not isinstance(tier, dict) or "up_to" not in tier:
            raise missing(f"{name}[up_to]")
        up_to = tier["up_to"]
        last = i == len(tiers) - 1
        if up_to == "inf":
            if not last:
                raise invalid(f"{name}[up_to]", "Only the last tier may have `up_to=inf`.")
            up = None
        else:
            up = as_int(tier, "up_to", minimum=1)
            if last:
                raise invalid(f"{name}[up_to]", "The last tier must have `up_to=inf`.")
            if up <= previous:
                raise invalid(f"{name}[up_to]", "Tiers must be in increasing order of `up_to`.")
            previous = up
        unit, unit_dec = _tier_amount(tier, name, "unit_amount")
        flat, flat_dec = _tier_amount(tier, name, "flat_amount")
        if unit_dec is None and flat_dec is None:
            raise invalid(name, "Each tier must have a `unit_amount` or a `flat_amount`.")
        out.append(
            {
                "flat_amount": flat,
                "flat_amount_decimal": flat_dec,
                "unit_amount": unit,
                "unit_amount_decimal": unit_dec,
                "up_to": up,
            }
        )
    return out


def _tier_amount(tier: dict, name: str, field: str) -> tuple[int | None, str | None]:
    has_int = tier.get(field) not in (None, "")
    has_dec = tier.get(f"{field}_decimal") not in (None, "")
    if has_int and has_dec:
        raise invalid(f"{name}[{field}_decimal]", f"You may only specify one of {field} and {field}_decimal.")
    if has_int:
        value = as_int(tier, field, minimum=0)
        return value, str(value)
    if has_dec:
        dec = as_decimal(tier[f"{field}_decimal"], f"{name}[{field}_decimal]")
        whole = int(dec) if dec == dec.to_integral_value() else None
        return whole, _decimal_str(dec)
    return None, None


def create_price(ctx: Ctx, p: dict, param_prefix: str = "") -> dict:
    def pname(name: str) -> str:
        return f"{param_prefix}[{name}]" if param_prefix else name

    currency = check_currency(p.get("currency") or "", pname("currency")) if p.get("currency") else None
    if currency is None:
        raise missing(pname("currency"))
    if p.get("product") and p.get("product_data"):
        raise invalid(
            pname("product"), "You may only specify one of these parameters: product, product_data."
        )
    if p.get("product"):
        prod = ctx.state.require(p["product"], "product", pname("product"))
        if prod.get("deleted"):
            raise no_such_param("product", p["product"], pname("product"))
    elif isinstance(p.get("product_data"), dict):
        data = dict(p["product_data"])
        if not data.get("name"):
            raise missing(pname("product_data") + "[name]")
        sub = Ctx(
            ctx.state,
            ctx.server,
            ctx.method,
            ctx.path,
            data,
            ctx.headers,
            ctx.request_id,
            ctx.idempotency_key,
            ctx.api_mode,
            ctx.token,
        )
        prod_view = products_create(sub)
        prod = ctx.state.get(prod_view["id"], "product")
    else:
        raise missing(pname("product"))
    scheme = p.get("billing_scheme") or "per_unit"
    if scheme not in ("per_unit", "tiered"):
        raise invalid(pname("billing_scheme"), "Invalid billing_scheme: must be one of per_unit or tiered")
    recurring = None
    if isinstance(p.get("recurring"), dict):
        r = p["recurring"]
        interval = r.get("interval")
        if not interval:
            raise missing(pname("recurring") + "[interval]")
        if interval not in INTERVALS:
            raise invalid(
                pname("recurring") + "[interval]",
                "Invalid interval: must be one of day, week, month, or year",
            )
        usage_type = r.get("usage_type") or "licensed"
        if usage_type not in ("licensed", "metered"):
            raise invalid(
                pname("recurring") + "[usage_type]", "Invalid usage_type: must be one of licensed or metered"
            )
        meter = r.get("meter") or None
        if usage_type == "metered" and not meter:
            raise invalid(
                pname("recurring") + "[meter]",
                "Metered prices must be backed by a meter: set `recurring[meter]` to the ID of an active "
                "billing meter.",
            )
        if meter:
            if usage_type != "metered":
                raise invalid(
                    pname("recurring") + "[meter]",
                    "`recurring[meter]` can only be set when `recurring[usage_type]` is `metered`.",
                )
            m = ctx.state.require(meter, "billing.meter", pname("recurring") + "[meter]", "billing meter")
            if m["status"] != "active":
                raise invalid(
                    pname("recurring") + "[meter]", "You can't attach a deactivated meter to a price."
                )
        interval_count = as_int(r, "interval_count", 1, minimum=1)
        recurring = {
            "interval": interval,
            "interval_count": interval_count,
            "meter": meter,
            "trial_period_days": as_int(r, "trial_period_days", None),
            "usage_type": usage_type,
        }
    tiers = None
    tiers_mode = p.get("tiers_mode") or None
    if scheme == "tiered":
        if tiers_mode not in ("graduated", "volume"):
            if not tiers_mode:
                raise missing(pname("tiers_mode"))
            raise invalid(pname("tiers_mode"), "Invalid tiers_mode: must be one of graduated or volume")
        if p.get("unit_amount") not in (None, "") or p.get("unit_amount_decimal") not in (None, ""):
            raise invalid(pname("unit_amount"), "You may not specify `unit_amount` for a tiered price.")
        tiers = _tiers(p, pname)
        unit_amount, unit_dec = None, None
    else:
        if p.get("tiers") or tiers_mode:
            raise invalid(pname("tiers"), "Tiers can only be set when `billing_scheme=tiered`.")
        unit_amount, unit_dec = _amounts(p, pname, p.get("custom_unit_amount") is None)
    lookup_key = p.get("lookup_key") or None
    if lookup_key:
        holder = next((x for x in ctx.state.all("price") if x.get("lookup_key") == lookup_key), None)
        if holder is not None:
            if as_bool(p, "transfer_lookup_key", False):
                holder["lookup_key"] = None
                ctx.state.put(holder)
            else:
                raise invalid(
                    pname("lookup_key"), f"A price (`{holder['id']}`) already uses that lookup key."
                )
    price = {
        "id": new_id("price", 24),
        "object": "price",
        "active": as_bool(p, "active", True),
        "billing_scheme": scheme,
        "created": ctx.now(),
        "currency": currency,
        "custom_unit_amount": p.get("custom_unit_amount") or None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": apply_metadata({}, p.get("metadata"), pname("metadata")),
        "nickname": p.get("nickname") or None,
        "product": prod["id"],
        "recurring": recurring,
        "tax_behavior": p.get("tax_behavior") or "unspecified",
        "tiers_mode": tiers_mode if scheme == "tiered" else None,
        "transform_quantity": p.get("transform_quantity") or None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_dec,
    }
    if price["transform_quantity"]:
        tq = price["transform_quantity"]
        price["transform_quantity"] = {
            "divide_by": as_int(tq, "divide_by", 1, minimum=1),
            "round": tq.get("round") or "up",
        }
    ctx.state.put(price)
    if tiers is not None:
        ctx.state.meta[price["id"]]["tiers"] = tiers
    ctx.emit("price.created", price)
    return price


@route("POST", "/v1/prices", "_price_create_params")
def prices_create(ctx: Ctx):
    return ctx.render(create_price(ctx, ctx.params))


prices_search = search_route("price", "prices", "_price_search_params")


prices_retrieve = retrieve_route("/v1/prices/{id}", "price", "price", "_price_retrieve_params")


@route("POST", "/v1/prices/{id}", "_price_update_params")
def prices_update(ctx: Ctx):
    price = get_or_404(ctx, ctx.path_args["id"], "price", "price")
    p = ctx.params
    before = ctx.state.render(price)
    if "active" in p:
        price["active"] = as_bool(p, "active")
    if "nickname" in p:
        price["nickname"] = p["nickname"] or None
    if "metadata" in p:
        price["metadata"] = apply_metadata(price["metadata"], p["metadata"])
    if "tax_behavior" in p:
        price["tax_behavior"] = p["tax_behavior"]
    if "lookup_key" in p:
        key = p["lookup_key"] or None
        if key:
            holder = next(
                (x for x in ctx.state.all("price") if x.get("lookup_key") == key and x is not price), None
            )
            if holder is not None:
                if as_bool(p, "transfer_lookup_key", False):
                    holder["lookup_key"] = None
                else:
                    raise invalid("lookup_key", f"A price (`{holder['id']}`) already uses that lookup key.")
        price["lookup_key"] = key
    ctx.state.put(price)
    emit_changes(ctx, price, before, "price.updated")
    return ctx.render(price)


@route("GET", "/v1/prices", "_price_list_params")
def prices_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("price")
    if "active" in p:
        active = as_bool(p, "active")
        items = [x for x in items if x["active"] == active]
    if p.get("currency"):
        items = [x for x in items if x["currency"] == p["currency"].lower()]
    if p.get("product"):
        items = [x for x in items if x["product"] == p["product"]]
    if p.get("type"):
        items = [x for x in items if x["type"] == p["type"]]
    if p.get("lookup_keys"):
        keys = set(p["lookup_keys"] if isinstance(p["lookup_keys"], list) else [p["lookup_keys"]])
        items = [x for x in items if x.get("lookup_key") in keys]
    rec = p.get("recurring")
    if isinstance(rec, dict):
        for key in ("interval", "usage_type", "meter"):
            if rec.get(key):
                items = [x for x in items if x["recurring"] and x["recurring"].get(key) == rec[key]]
    return ctx.state.list_page(items, p, "/v1/prices", label="price")


# payment methods -----------------------------------------------------------------------------------

# Stripe's test cards (docs.stripe.com/testing): number -> (brand, behaviour).
# "ok": attaches and charges; "charge_fails": attaches, every charge is declined
# (4000 0000 0000 0341); "declined": declined when attached or set up (4000 0000 0000 0002).
TEST_CARDS = {
    "4242424242424242": ("visa", "ok"),
    "4000056655665556": ("visa", "ok"),
    "5555555555554444": ("mastercard", "ok"),
    "378282246310005": ("amex", "ok"),
    "4000000000000341": ("visa", "charge_fails"),
    "4000000000000002": ("visa", "declined"),
    "4000000000009995": ("visa", "declined_insufficient_funds"),
}
TEST_TOKENS = {
    "tok_visa": "4242424242424242",
    "tok_mastercard": "5555555555554444",
    "tok_amex": "378282246310005",
    "tok_chargeCustomerFail": "4000000000000341",
    "tok_chargeDeclined": "4000000000000002",
    "tok_chargeDeclinedInsufficientFunds": "4000000000009995",
}
TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
}


def card_declined(
    message: str = "Your card was declined.", decline_code: str = "generic_decline", extra: dict | None = None
) -> StripeError:
    return StripeError(
        402,
        message,
        type="card_error",
        code="card_declined",
        extra={"decline_code": decline_code, **(extra or {})},
    )


def new_payment_method(
    ctx: Ctx, number: str, *, billing_details: dict | None = None, metadata=None, exp_month=12, exp_year=None
) -> dict:
    brand, behaviour = TEST_CARDS.get(number, ("visa", "ok"))
    pm = {
        "id": new_id("pm", 24),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "card": {
            "brand": brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "display_brand": brand,
            "exp_month": int(exp_month),
            "exp_year": int(exp_year or 2034),
            "fingerprint": secrets.token_hex(8),
            "funding": "credit",
            "generated_from": None,
            "last4": number[-4:],
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": ctx.now(),
        "customer": None,
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "type": "card",
    }
    if isinstance(billing_details, dict):
        for key, value in billing_details.items():
            if key == "address" and isinstance(value, dict):
                pm["billing_details"]["address"].update(value)
            elif key in pm["billing_details"]:
                pm["billing_details"][key] = value or None
    ctx.state.put(pm)
    ctx.state.meta[pm["id"]]["behaviour"] = behaviour
    return pm


def materialize_payment_method(ctx: Ctx, pm_id, param: str) -> dict:
    """A stored payment method, or a new one for Stripe's test shorthands like `pm_card_visa`."""
    if isinstance(pm_id, str) and pm_id in TEST_PAYMENT_METHODS:
        return new_payment_method(ctx, TEST_PAYMENT_METHODS[pm_id])
    pm = ctx.state.get(pm_id, "payment_method")
    if pm is None:
        raise no_such_param("PaymentMethod", str(pm_id), param)
    return pm


def payment_method_behaviour(ctx: Ctx, pm_id: str) -> str:
    return ctx.state.meta[pm_id].get("behaviour", "ok")


def _attach(ctx: Ctx, pm: dict, cus: dict) -> None:
    if pm.get("customer") == cus["id"]:
        return
    if pm.get("customer"):
        raise invalid(
            "payment_method", "The payment method you provided has already been attached to a customer."
        )
    behaviour = payment_method_behaviour(ctx, pm["id"])
    if behaviour == "declined":
        raise card_declined()
    if behaviour == "declined_insufficient_funds":
        raise card_declined("Your card has insufficient funds.", "insufficient_funds")
    pm["customer"] = cus["id"]
    ctx.state.put(pm)
    ctx.emit("payment_method.attached", pm)


@route("POST", "/v1/payment_methods", "_payment_method_create_params")
def payment_methods_create(ctx: Ctx):
    p = ctx.params
    kind = p.get("type")
    if not kind:
        raise missing("type")
    if kind != "card":
        raise invalid("type", f"This test server supports payment methods of type `card` only, not `{kind}`.")
    card = p.get("card") if isinstance(p.get("card"), dict) else None
    if card is None:
        raise missing("card")
    if card.get("token"):
        number = TEST_TOKENS.get(card["token"])
        if number is None:
            raise no_such_param("token", card["token"], "card[token]")
    else:
        number = (card.get("number") or "").replace(" ", "")
        if not number:
            raise missing("card[number]")
        if not number.isdigit() or not 13 <= len(number) <= 19:
            raise StripeError(
                402,
                "Your card number is incorrect.",
                type="card_error",
                code="incorrect_number",
                param="card[number]",
            )
        for name in ("exp_month", "exp_year"):
            if not card.get(name):
                raise missing(f"card[{name}]")
    pm = new_payment_method(
        ctx,
        number,
        billing_details=p.get("billing_details"),
        metadata=p.get("metadata"),
        exp_month=card.get("exp_month", 12),
        exp_year=card.get("exp_year"),
    )
    return ctx.render(pm)


payment_methods_retrieve = retrieve_route(
    "/v1/payment_methods/{id}", "payment_method", "PaymentMethod", "_payment_method_retrieve_params"
)


@route("POST", "/v1/payment_methods/{id}", "_payment_method_update_params")
def payment_methods_update(ctx: Ctx):
    pm = get_or_404(ctx, ctx.path_args["id"], "payment_method", "PaymentMethod")
    before = ctx.state.render(pm)
    if "metadata" in ctx.params:
        pm["metadata"] = apply_metadata(pm["metadata"], ctx.params["metadata"])
    if isinstance(ctx.params.get("billing_details"), dict):
        for key, value in ctx.params["billing_details"].items():
            if key == "address" and isinstance(value, dict):
                pm["billing_details"]["address"].update(value)
            elif key in pm["billing_details"]:
                pm["billing_details"][key] = value or None
    if isinstance(ctx.params.get("card"), dict):
        for key in ("exp_month", "exp_year"):
            if key in ctx.params["card"]:
                pm["card"][key] = as_int(ctx.params["card"], key)
    ctx.state.put(pm)
    emit_changes(ctx, pm, before, "payment_method.updated")
    return ctx.render(pm)


@route("POST", "/v1/payment_methods/{id}/attach", "_payment_method_attach_params")
def payment_methods_attach(ctx: Ctx):
    pm_id = ctx.path_args["id"]
    if pm_id in TEST_PAYMENT_METHODS:
        pm = new_payment_method(ctx, TEST_PAYMENT_METHODS[pm_id])
    else:
        pm = get_or_404(ctx, pm_id, "payment_method", "PaymentMethod")
    customer = ctx.params.get("customer")
    if not customer:
        raise missing("customer")
    cus = ctx.state.require(customer, "customer", "customer")
    _attach(ctx, pm, cus)
    return ctx.render(pm)


@route("POST", "/v1/payment_methods/{id}/detach", "_payment_method_detach_params")
def payment_methods_detach(ctx: Ctx):
    pm = get_or_404(ctx, ctx.path_args["id"], "payment_method", "PaymentMethod")
    if not pm.get("customer"):
        raise invalid(
            "payment_method",
            "The payment method you provided is not attached to a customer so detachment is impossible.",
        )
    cus = ctx.state.get(pm["customer"], "customer")
    previous = {"customer": pm["customer"]}
    pm["customer"] = None
    ctx.state.put(pm)
    if cus and not cus.get("deleted") and cus["invoice_settings"]["default_payment_method"] == pm["id"]:
        cus["invoice_settings"]["default_payment_method"] = None
        ctx.state.put(cus)
    ctx.emit("payment_method.detached", pm, previous)
    return ctx.render(pm)


@route("GET", "/v1/payment_methods", "_payment_method_list_params")
def payment_methods_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("payment_method")
    if p.get("customer"):
        ctx.state.require(p["customer"], "customer", "customer")
        items = [x for x in items if x.get("customer") == p["customer"]]
    if p.get("type"):
        items = [x for x in items if x["type"] == p["type"]]
    return ctx.state.list_page(items, p, "/v1/payment_methods", label="payment_method")


# setup intents -------------------------------------------------------------------------------------


def new_setup_intent(
    ctx: Ctx,
    *,
    customer: str | None,
    payment_method: str | None = None,
    usage: str = "off_session",
    metadata=None,
    description=None,
) -> dict:
    sid = new_id("seti", 24)
    seti = {
        "id": sid,
        "object": "setup_intent",
        "application": None,
        "automatic_payment_methods": None,
        "cancellation_reason": None,
        "client_secret": f"{sid}_secret_{secrets.token_urlsafe(18)}",
        "created": ctx.now(),
        "customer": customer,
        "description": description,
        "flow_directions": None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": apply_metadata({}, metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": payment_method,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {"mandate_options": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "single_use_mandate": None,
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
        "usage": usage,
    }
    ctx.state.put(seti)
    ctx.emit("setup_intent.created", seti)
    return seti


def confirm_setup_intent(ctx: Ctx, seti: dict, pm_id=None) -> dict:
    if seti["status"] in ("succeeded", "canceled"):
        raise invalid(
            "setup_intent",
            f"You cannot confirm this SetupIntent because it has a status of {seti['status']}.",
        )
    pm_ref = pm_id or seti.get("payment_method")
    if not pm_ref:
        raise invalid(
            "payment_method",
            "You cannot confirm this SetupIntent because it's missing a payment "
            "method. Update the SetupIntent with a payment method and then confirm it again.",
        )
    pm = materialize_payment_method(ctx, pm_ref, "payment_method")
    seti["payment_method"] = pm["id"]
    behaviour = payment_method_behaviour(ctx, pm["id"])
    if behaviour.startswith("declined"):
        error = card_declined()
        seti["status"] = "requires_payment_method"
        seti["last_setup_error"] = {
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": error.message,
            "type": "card_error",
        }
        seti["payment_method"] = None
        ctx.state.put(seti)
        ctx.emit("setup_intent.setup_failed", seti)
        error.extra["setup_intent"] = ctx.state.render(seti)
        raise error
    if seti.get("customer"):
        cus = ctx.state.get(seti["customer"], "customer")
        if cus is not None and not cus.get("deleted"):
            _attach(ctx, pm, cus)
    seti["status"] = "succeeded"
    seti["last_setup_error"] = None
    ctx.state.put(seti)
    ctx.emit("setup_intent.succeeded", seti)
    return seti


@route("POST", "/v1/setup_intents", "_setup_intent_create_params")
def setup_intents_create(ctx: Ctx):
    p = ctx.params
    customer = p.get("customer") or None
    if customer:
        ctx.state.require(customer, "customer", "customer")
    pm = None
    if p.get("payment_method"):
        pm = materialize_payment_method(ctx, p["payment_method"], "payment_method")["id"]
    seti = new_setup_intent(
        ctx,
        customer=customer,
        payment_method=pm,
        usage=p.get("usage") or "off_session",
        metadata=p.get("metadata"),
        description=p.get("description") or None,
    )
    if as_bool(p, "confirm", False):
        confirm_setup_intent(ctx, seti)
    return ctx.render(seti)


setup_intents_retrieve = retrieve_route(
    "/v1/setup_intents/{id}", "setup_intent", "setupintent", "_setup_intent_retrieve_params"
)


@route("POST", "/v1/setup_intents/{id}", "_setup_intent_update_params")
def setup_intents_update(ctx: Ctx):
    seti = get_or_404(ctx, ctx.path_args["id"], "setup_intent", "setupintent")
    p = ctx.params
    if "metadata" in p:
        seti["metadata"] = apply_metadata(seti["metadata"], p["metadata"])
    if "description" in p:
        seti["description"] = p["description"] or None
    if p.get("customer"):
        seti["customer"] = ctx.state.require(p["customer"], "customer", "customer")["id"]
    if p.get("payment_method"):
        seti["payment_method"] = materialize_payment_method(ctx, p["payment_method"], "payment_method")["id"]
        if seti["status"] == "requires_payment_method":
            seti["status"] = "requires_confirmation"
    ctx.state.put(seti)
    return ctx.render(seti)


@route("POST", "/v1/setup_intents/{id}/confirm", "_setup_intent_confirm_params")
def setup_intents_confirm(ctx: Ctx):
    seti = get_or_404(ctx, ctx.path_args["id"], "setup_intent", "setupintent")
    return ctx.render(confirm_setup_intent(ctx, seti, ctx.params.get("payment_method")))


@route("POST", "/v1/setup_intents/{id}/cancel", "_setup_intent_cancel_params")
def setup_intents_cancel(ctx: Ctx):
    seti = get_or_404(ctx, ctx.path_args["id"], "setup_intent", "setupintent")
    if seti["status"] in ("succeeded", "canceled"):
        raise invalid(
            "setup_intent", f"You cannot cancel this SetupIntent because it has a status of {seti['status']}."
        )
    seti["status"] = "canceled"
    seti["cancellation_reason"] = ctx.params.get("cancellation_reason") or None
    ctx.state.put(seti)
    ctx.emit("setup_intent.canceled", seti)
    return ctx.render(seti)


@route("GET", "/v1/setup_intents", "_setup_intent_list_params")
def setup_intents_list(ctx: Ctx):
    items = ctx.state.all("setup_intent")
    for key in ("customer", "payment_method"):
        if ctx.params.get(key):
            items = [x for x in items if x.get(key) == ctx.params[key]]
    return ctx.state.list_page(items, ctx.params, "/v1/setup_intents", label="setupintent")


# events --------------------------------------------------------------------------------------------


events_retrieve = retrieve_route("/v1/events/{id}", "event", "event", "_event_retrieve_params")


@route("GET", "/v1/events", "_event_list_params")
def events_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("event")
    if p.get("type"):
        pattern = p["type"]
        if pattern.endswith("*"):
            items = [e for e in items if e["type"].startswith(pattern[:-1])]
        else:
            items = [e for e in items if e["type"] == pattern]
    if p.get("types"):
        types = set(p["types"] if isinstance(p["types"], list) else [p["types"]])
        items = [e for e in items if e["type"] in types]
    return ctx.state.list_page(items, p, "/v1/events", label="event")


# the account and small read-only lists dj-stripe asks for ------------------------------------------

ACCOUNT_ID = "acct_1LocalStripeTest0"


def platform_account(ctx: Ctx) -> dict:
    account = ctx.state.get(ACCOUNT_ID, "account")
    if account is None:
        account = {
            "id": ACCOUNT_ID,
            "object": "account",
            "business_profile": {
                "annual_revenue": None,
                "estimated_worker_count": None,
                "mcc": None,
                "name": "Local Stripe test account",
                "product_description": None,
                "support_address": None,
                "support_email": None,
                "support_phone": None,
                "support_url": None,
                "url": None,
            },
            "business_type": None,
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "controller": {"type": "account"},
            "country": "US",
            "created": 1700000000,
            "default_currency": "usd",
            "details_submitted": True,
            "email": "billing@example.com",
            "future_requirements": {
                "alternatives": [],
                "current_deadline": None,
                "currently_due": [],
                "disabled_reason": None,
                "errors": [],
                "eventually_due": [],
                "past_due": [],
                "pending_verification": [],
            },
            "metadata": {},
            "payouts_enabled": True,
            "requirements": {
                "alternatives": [],
                "current_deadline": None,
                "currently_due": [],
                "disabled_reason": None,
                "errors": [],
                "eventually_due": [],
                "past_due": [],
                "pending_verification": [],
            },
            "settings": {
                "branding": {"icon": None, "logo": None, "primary_color": None, "secondary_color": None},
                "dashboard": {"display_name": "Local Stripe", "timezone": "Etc/UTC"},
                "invoices": {"default_account_tax_ids": None},
                "payments": {"statement_descriptor": "LOCAL STRIPE"},
            },
            "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
            "type": "standard",
        }
        ctx.state.put(account)
    return account


@route("GET", "/v1/account", "_account_retrieve_current_params")
def account_retrieve_current(ctx: Ctx):
    return ctx.render(platform_account(ctx))


@route("GET", "/v1/accounts/{id}", "_account_retrieve_params")
def account_retrieve(ctx: Ctx):
    account = platform_account(ctx)
    if ctx.path_args["id"] != account["id"]:
        raise no_such("account", ctx.path_args["id"])
    return ctx.render(account)


def _empty_list(ctx: Ctx, url: str) -> dict:
    return ctx.state.list_page([], ctx.params, url)


@route("GET", "/v1/products/{id}/features", "_product_list_features_params")
def products_features(ctx: Ctx):
    prod = get_or_404(ctx, ctx.path_args["id"], "product", "product")
    return _empty_list(ctx, f"/v1/products/{prod['id']}/features")


@route("GET", "/v1/customers/{id}/sources", "_customer_list_sources_params")
def customers_sources(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    return _empty_list(ctx, f"/v1/customers/{cus['id']}/sources")


@route("GET", "/v1/customers/{id}/tax_ids", "_customer_list_tax_ids_params")
def customers_tax_ids(ctx: Ctx):
    cus = live_customer(ctx, ctx.path_args["id"])
    return _empty_list(ctx, f"/v1/customers/{cus['id']}/tax_ids")


# --- payment intents (stored by the test control `create_payment_intent`; retrieved as Stripe does) ---

PAYMENT_INTENT_EVENTS = {
    "succeeded": "payment_intent.succeeded",
    "requires_payment_method": "payment_intent.payment_failed",
    "requires_action": "payment_intent.requires_action",
}


def new_payment_intent(
    ctx: Ctx,
    *,
    customer: str | None,
    amount: int,
    currency: str = "usd",
    status: str = "succeeded",
    payment_method: str | None = None,
    metadata=None,
    description=None,
) -> dict:
    """A PaymentIntent in `status` (succeeded, requires_payment_method after a failed attempt,
    requires_action for 3-D Secure), stored and announced with the event Stripe sends for it."""
    pid = new_id("pi", 24)
    failed = status == "requires_payment_method"
    pi = {
        "id": pid,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{pid}_secret_{secrets.token_urlsafe(18)}",
        "confirmation_method": "automatic",
        "created": ctx.now(),
        "currency": check_currency(currency),
        "customer": customer,
        "description": description,
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "type": "card_error",
        }
        if failed
        else None,
        "latest_charge": new_id("ch", 24) if status == "succeeded" else None,
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
        if status == "requires_action"
        else None,
        "on_behalf_of": None,
        "payment_method": None if failed else payment_method,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }
    ctx.state.put(pi)
    ctx.emit("payment_intent.created", pi)
    if status in PAYMENT_INTENT_EVENTS:
        ctx.emit(PAYMENT_INTENT_EVENTS[status], pi)
    return pi


payment_intents_retrieve = retrieve_route(
    "/v1/payment_intents/{id}", "payment_intent", "payment_intent", "_payment_intent_retrieve_params"
)
