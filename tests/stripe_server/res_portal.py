"""The Customer Portal: configurations and sessions.

A session is made for an existing customer and answers a short-lived `url` on the server's own
address (`<server>/p/session/test_<secret>`), which serves a small HTML page (what the demo opens)
with the customer, its subscriptions and invoices and a link back to `return_url`. A session without
`configuration` uses the account's default configuration, created on first use as Stripe does.
`return_url` is required unless the configuration has a `default_return_url`.
"""

from __future__ import annotations

import html
import secrets

from .errors import invalid, missing, no_such_param
from .res_core import get_or_404, live_customer_param, retrieve_route
from .routing import Ctx, route
from .state import apply_metadata, as_bool, new_id

# configurations ------------------------------------------------------------------------------------


def _features(given: dict | None, base: dict | None = None) -> dict:
    """Stripe's `features` with every sub-object present, `given` merged over `base` (or the defaults)."""
    out = base or {
        "customer_update": {"allowed_updates": [], "enabled": False},
        "invoice_history": {"enabled": False},
        "payment_method_update": {"enabled": False, "payment_method_configuration": None},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": False, "options": []},
            "enabled": False,
            "mode": "at_period_end",
            "proration_behavior": "none",
        },
        "subscription_update": {
            "billing_cycle_anchor": None,
            "default_allowed_updates": [],
            "enabled": False,
            "products": [],
            "proration_behavior": "none",
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    }
    for name, value in (given or {}).items():
        if not isinstance(value, dict) or name not in out:
            continue
        section = out[name]
        for key, sub in value.items():
            if key == "enabled":
                section[key] = as_bool(value, "enabled")
            elif key == "cancellation_reason" and isinstance(sub, dict):
                reason = section["cancellation_reason"]
                if "enabled" in sub:
                    reason["enabled"] = as_bool(sub, "enabled")
                if "options" in sub:
                    reason["options"] = sub["options"] or []
            elif sub == "":
                section[key] = [] if isinstance(section.get(key), list) else None
            else:
                section[key] = sub
    return out


def _business_profile(given, base: dict | None = None) -> dict:
    out = base or {"headline": None, "privacy_policy_url": None, "terms_of_service_url": None}
    for key in ("headline", "privacy_policy_url", "terms_of_service_url"):
        if isinstance(given, dict) and key in given:
            out[key] = given[key] or None
    return out


def new_configuration(ctx: Ctx, p: dict, *, is_default: bool = False) -> dict:
    now = ctx.now()
    login = p.get("login_page") if isinstance(p.get("login_page"), dict) else {}
    config = {
        "id": new_id("bpc", 24),
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": _business_profile(p.get("business_profile")),
        "created": now,
        "default_return_url": p.get("default_return_url") or None,
        "features": _features(p.get("features")),
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": bool(as_bool(login, "enabled", False)), "url": None},
        "metadata": apply_metadata({}, p.get("metadata")),
        "name": p.get("name") or None,
        "updated": now,
    }
    if config["login_page"]["enabled"]:
        config["login_page"]["url"] = f"{ctx.server.url}/p/login/test_{secrets.token_urlsafe(12)}"
    ctx.state.put(config)
    return config


def default_configuration(ctx: Ctx) -> dict:
    """The account's default configuration (made the first time a session needs it)."""
    for config in ctx.state.all("billing_portal.configuration"):
        if config["is_default"]:
            return config
    config = new_configuration(
        ctx,
        {
            "features": {
                "customer_update": {"enabled": True, "allowed_updates": ["email", "address", "tax_id"]},
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
            }
        },
        is_default=True,
    )
    ctx.emit("billing_portal.configuration.created", config)
    return config


@route("POST", "/v1/billing_portal/configurations", "billing_portal._configuration_create_params")
def configurations_create(ctx: Ctx):
    if not isinstance(ctx.params.get("features"), dict):
        raise missing("features")
    config = new_configuration(ctx, ctx.params)
    ctx.emit("billing_portal.configuration.created", config)
    return ctx.render(config)


configurations_retrieve = retrieve_route(
    "/v1/billing_portal/configurations/{id}",
    "billing_portal.configuration",
    "billing_portal.configuration",
    "billing_portal._configuration_retrieve_params",
)


@route("POST", "/v1/billing_portal/configurations/{id}", "billing_portal._configuration_update_params")
def configurations_update(ctx: Ctx):
    kind = "billing_portal.configuration"
    config = get_or_404(ctx, ctx.path_args["id"], kind, kind)
    p = ctx.params
    if "active" in p:
        active = as_bool(p, "active")
        if not active and config["is_default"]:
            raise invalid("active", "You cannot deactivate the default configuration.")
        config["active"] = active
    if "business_profile" in p:
        config["business_profile"] = _business_profile(p["business_profile"], config["business_profile"])
    if "default_return_url" in p:
        config["default_return_url"] = p["default_return_url"] or None
    if "features" in p:
        config["features"] = _features(p["features"], config["features"])
    if isinstance(p.get("login_page"), dict) and "enabled" in p["login_page"]:
        enabled = as_bool(p["login_page"], "enabled")
        url = config["login_page"]["url"] or f"{ctx.server.url}/p/login/test_{secrets.token_urlsafe(12)}"
        config["login_page"] = {"enabled": enabled, "url": url if enabled else None}
    if "metadata" in p:
        config["metadata"] = apply_metadata(config["metadata"], p["metadata"])
    if "name" in p:
        config["name"] = p["name"] or None
    config["updated"] = ctx.now()
    ctx.state.put(config)
    ctx.emit("billing_portal.configuration.updated", config)
    return ctx.render(config)


@route("GET", "/v1/billing_portal/configurations", "billing_portal._configuration_list_params")
def configurations_list(ctx: Ctx):
    p = ctx.params
    items = ctx.state.all("billing_portal.configuration")
    if "active" in p:
        active = as_bool(p, "active")
        items = [c for c in items if c["active"] == active]
    if "is_default" in p:
        is_default = as_bool(p, "is_default")
        items = [c for c in items if c["is_default"] == is_default]
    return ctx.state.list_page(
        items, p, "/v1/billing_portal/configurations", label="billing_portal.configuration"
    )


# sessions ------------------------------------------------------------------------------------------


@route("POST", "/v1/billing_portal/sessions", "billing_portal._session_create_params")
def sessions_create(ctx: Ctx):
    p = ctx.params
    if p.get("customer_account") and not p.get("customer"):
        raise no_such_param("account", p["customer_account"], "customer_account")
    if not p.get("customer"):
        raise missing("customer")
    cus = live_customer_param(ctx, p["customer"])
    if p.get("configuration"):
        config = ctx.state.get(p["configuration"], "billing_portal.configuration")
        if config is None:
            raise no_such_param("billing_portal.configuration", p["configuration"], "configuration")
        if not config["active"]:
            raise invalid(
                "configuration",
                f"The configuration {config['id']} is not active. Activate it or use another configuration.",
            )
    else:
        config = default_configuration(ctx)
    return_url = p.get("return_url") or config["default_return_url"]
    if not return_url:
        raise invalid(
            "return_url",
            "You must provide a `return_url` or set a `default_return_url` on the portal configuration.",
        )
    if not str(return_url).startswith(("http://", "https://")):
        raise invalid("return_url", "Not a valid URL")
    flow = None
    if isinstance(p.get("flow_data"), dict):
        flow = _flow(ctx, p["flow_data"], cus["id"])
    token = f"test_{secrets.token_urlsafe(32)}"
    session = {
        "id": new_id("bps", 24),
        "object": "billing_portal.session",
        "configuration": config["id"],
        "created": ctx.now(),
        "customer": cus["id"],
        "customer_account": None,
        "flow": flow,
        "livemode": False,
        "locale": p.get("locale") or None,
        "on_behalf_of": p.get("on_behalf_of") or None,
        "return_url": return_url,
        "url": f"{ctx.server.url}/p/session/{token}",
    }
    ctx.state.put(session)
    ctx.state.meta["portal_tokens"][token] = session["id"]
    ctx.emit("billing_portal.session.created", session)
    return ctx.render(session)


def _flow(ctx: Ctx, data: dict, customer_id: str) -> dict:
    """`flow` from `flow_data`: the deep link's type, its subscription (checked) and after-completion."""
    kind = data.get("type")
    if not kind:
        raise missing("flow_data[type]")
    flow = {
        "after_completion": {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"},
        "customer_update": None,
        "subscription_cancel": None,
        "subscription_update": None,
        "subscription_update_confirm": None,
        "type": kind,
    }
    after = data.get("after_completion")
    if isinstance(after, dict) and after.get("type"):
        flow["after_completion"]["type"] = after["type"]
        if after["type"] == "redirect":
            url = (after.get("redirect") or {}).get("return_url")
            if not url:
                raise missing("flow_data[after_completion][redirect][return_url]")
            flow["after_completion"]["redirect"] = {"return_url": url}
        if after["type"] == "hosted_confirmation":
            message = (after.get("hosted_confirmation") or {}).get("custom_message")
            flow["after_completion"]["hosted_confirmation"] = {"custom_message": message or None}
    if kind in ("subscription_cancel", "subscription_update", "subscription_update_confirm"):
        spec = data.get(kind) if isinstance(data.get(kind), dict) else {}
        name = f"flow_data[{kind}][subscription]"
        if not spec.get("subscription"):
            raise missing(name)
        sub = ctx.state.get(spec["subscription"], "subscription")
        if sub is None or sub["customer"] != customer_id:
            raise no_such_param("subscription", spec["subscription"], name)
        if sub["status"] == "canceled":
            raise invalid(name, "The subscription is canceled.")
        flow[kind] = {"subscription": sub["id"]}
        if kind == "subscription_cancel":
            flow[kind]["retention"] = None
        if kind == "subscription_update_confirm":
            flow[kind]["discounts"] = None
            flow[kind]["items"] = [
                {"id": i.get("id"), "price": i.get("price"), "quantity": i.get("quantity")}
                for i in spec.get("items") or []
                if isinstance(i, dict)
            ]
    return flow


def portal_page(state, token: str) -> tuple[int, str]:
    """(status, HTML) for GET /p/session/<token>: what a customer sees when the portal opens."""
    session = state.get(state.meta["portal_tokens"].get(token), "billing_portal.session")
    if session is None:
        return 404, _page("Session not found", "<p>This portal link is not valid.</p>")
    cus = state.objects.get(session["customer"], {})
    subs = [s for s in state.all("subscription") if s["customer"] == session["customer"]]
    invoices = [
        i for i in state.all("invoice") if not i.get("deleted") and i["customer"] == session["customer"]
    ]
    esc = html.escape
    rows = "".join(f"<li>{esc(s['id'])}: {esc(s['status'])}</li>" for s in subs) or "<li>None</li>"
    inv_rows = (
        "".join(
            f"<li>{esc(i.get('number') or i['id'])}: {esc(i['status'])}, {i['amount_due']} "
            f"{esc(i['currency'])}</li>"
            for i in invoices
        )
        or "<li>None</li>"
    )
    body = (
        f"<p>Customer: {esc(cus.get('email') or cus.get('name') or session['customer'])}</p>"
        f"<h2>Subscriptions</h2><ul>{rows}</ul><h2>Invoices</h2><ul>{inv_rows}</ul>"
        f'<p><a href="{esc(session["return_url"])}">Return</a></p>'
    )
    return 200, _page("Customer portal (local Stripe)", body)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
