"""Billing credits: credit grants, the credit balance summary and credit balance transactions.

Rules, from Stripe's API reference and "Billing credits" / "Set up billing credits":
- A grant gives a customer an amount (`amount[type]=monetary`, a positive integer in minor units) that
  applies to metered prices only (`applicability_config[scope][price_type]=metered`, or a list of
  metered prices). `category` defaults to `paid`, `effective_at` to now, `priority` to 50 (0 is
  applied first, 100 last); without `expires_at` it never expires.
- Every change to a grant's balance is a credit balance transaction (`cbtxn_...`): a credit
  `credits_granted` when the grant is made, a debit `credits_applied` for each invoice line the
  credit pays, `credits_expired` / `credits_voided` for what was left when the grant expired or was
  voided, and a credit `credits_application_invoice_voided` giving back what a voided invoice used.
- Credits are applied when an invoice is finalized, to its subscription lines whose price is metered
  (linked to a billing meter), before payment: the line gets `pretax_credit_amounts`, the invoice
  `total_pretax_credit_amounts`, and `total` / `amount_due` go down by the credit. Grants are used in
  order of priority, earliest expiry, promotional before paid, earliest effective date, oldest.
- The balance summary sums, per currency, what the customer's effective, unexpired, unvoided grants
  matching the filter have left. This server has no pending (draft-invoice) credit, so
  `available_balance` and `ledger_balance` are equal.
"""

from __future__ import annotations

from .errors import invalid, missing, no_such, no_such_param
from .res_core import check_currency, emit_changes, get_or_404, live_customer_param
from .routing import Ctx, route
from .state import apply_metadata, as_int, new_id

GRANT = "billing.credit_grant"
TXN = "billing.credit_balance_transaction"
DEFAULT_PRIORITY = 50

# the ledger ----------------------------------------------------------------------------------------


def _money(currency: str, value: int) -> dict:
    return {"monetary": {"currency": currency, "value": value}, "type": "monetary"}


def _transaction(
    state, grant: dict, kind: str, reason: str, value: int, at: int, *, invoice=None, line=None, ctx=None
) -> dict:
    """Record one credit (`kind="credit"`) or debit on `grant`'s ledger."""
    currency = grant["amount"]["monetary"]["currency"]
    detail: dict = {"amount": _money(currency, value), "type": reason}
    if kind == "credit":
        detail["credits_application_invoice_voided"] = (
            {"invoice": invoice, "invoice_line_item": line} if invoice else None
        )
    else:
        detail["credits_applied"] = {"invoice": invoice, "invoice_line_item": line} if invoice else None
    txn = {
        "id": new_id("cbtxn_test", 40),
        "object": TXN,
        "created": state.now_int(),
        "credit": detail if kind == "credit" else None,
        "credit_grant": grant["id"],
        "debit": detail if kind == "debit" else None,
        "effective_at": at,
        "livemode": False,
        "test_clock": None,
        "type": kind,
    }
    state.put(txn)
    state.meta[grant["id"]].setdefault("transactions", []).append(txn["id"])
    if ctx is not None:
        ctx.emit("billing.credit_balance_transaction.created", txn)
    else:
        state.emit("billing.credit_balance_transaction.created", txn)
    return txn


def _transactions(state, grant: dict) -> list[dict]:
    return [state.objects[i] for i in state.meta[grant["id"]].get("transactions", [])]


def remaining(state, grant: dict) -> int:
    """What is left on the grant's ledger (granted, minus used, expired or voided, plus given back)."""
    total = 0
    for txn in _transactions(state, grant):
        detail = txn["credit"] or txn["debit"]
        value = detail["amount"]["monetary"]["value"]
        total += value if txn["type"] == "credit" else -value
    return total


def settle_expiries(state) -> None:
    """Record the `credits_expired` debit of every grant whose `expires_at` has passed (once)."""
    now = state.now_int()
    for grant in state.all(GRANT):
        meta = state.meta[grant["id"]]
        if grant["voided_at"] or grant["expires_at"] is None or grant["expires_at"] > now:
            continue
        if meta.get("expiry_settled"):
            continue
        meta["expiry_settled"] = True
        left = remaining(state, grant)
        if left > 0:
            _transaction(state, grant, "debit", "credits_expired", left, grant["expires_at"])


def is_available(state, grant: dict) -> bool:
    now = state.now_int()
    return (
        grant["voided_at"] is None
        and (grant["effective_at"] or grant["created"]) <= now
        and (grant["expires_at"] is None or grant["expires_at"] > now)
    )


def applies_to_price(grant: dict, price: dict) -> bool:
    """A grant pays for a metered price: any metered price (`price_type`), or one of its `prices`."""
    recurring = price.get("recurring") or {}
    if recurring.get("usage_type") != "metered" or not recurring.get("meter"):
        return False
    scope = grant["applicability_config"]["scope"]
    if scope.get("price_type") == "metered":
        return True
    return any(p.get("id") == price["id"] for p in scope.get("prices") or [])


def _order(grant: dict) -> tuple:
    expires = grant["expires_at"] if grant["expires_at"] is not None else float("inf")
    promotional_first = 0 if grant["category"] == "promotional" else 1
    return (
        grant["priority"] if grant["priority"] is not None else DEFAULT_PRIORITY,
        expires,
        promotional_first,
        grant["effective_at"] or grant["created"],
        grant["created"],
    )


def _metered_price(state, line: dict) -> dict | None:
    parent = line.get("parent") or {}
    if parent.get("type") != "subscription_item_details":
        return None
    details = (line.get("pricing") or {}).get("price_details") or {}
    price = state.get(details.get("price"), "price")
    recurring = (price or {}).get("recurring") or {}
    if price is None or recurring.get("usage_type") != "metered" or not recurring.get("meter"):
        return None
    return price


def credit_plan(state, inv: dict) -> list[tuple[dict, dict, int]]:
    """[(line, grant, amount)]: how the customer's available grants would pay the invoice's metered
    lines now (nothing is recorded)."""
    settle_expiries(state)
    grants = sorted(
        (
            g
            for g in state.all(GRANT)
            if g["customer"] == inv["customer"]
            and g["amount"]["monetary"]["currency"] == inv["currency"]
            and is_available(state, g)
        ),
        key=_order,
    )
    left = {g["id"]: remaining(state, g) for g in grants}
    plan = []
    for line in inv["lines"]["data"]:
        price = _metered_price(state, line)
        if price is None or line["amount"] <= 0:
            continue
        due = line["amount"] - sum(c["amount"] for c in line.get("pretax_credit_amounts") or [])
        for grant in grants:
            if due <= 0:
                break
            if left[grant["id"]] <= 0 or not applies_to_price(grant, price):
                continue
            used = min(due, left[grant["id"]])
            left[grant["id"]] -= used
            due -= used
            plan.append((line, grant, used))
    return plan


def _credit_entry(amount: int, txn_id: str | None) -> dict:
    return {
        "amount": amount,
        "credit_balance_transaction": txn_id,
        "discount": None,
        "type": "credit_balance_transaction",
    }


def apply_credits(ctx: Ctx, inv: dict, *, record: bool = True) -> int:
    """Apply the customer's billing credits to `inv`'s metered lines (at finalization, `record=True`:
    with debit transactions; for a preview, `record=False`: amounts only). Returns the credit used."""
    total = 0
    for line, grant, used in credit_plan(ctx.state, inv):
        txn_id = None
        if record:
            txn = _transaction(
                ctx.state,
                grant,
                "debit",
                "credits_applied",
                used,
                ctx.now(),
                invoice=inv["id"],
                line=line["id"],
                ctx=ctx,
            )
            txn_id = txn["id"]
            grant["updated"] = ctx.now()
            ctx.state.put(grant)
        entry = _credit_entry(used, txn_id)
        line.setdefault("pretax_credit_amounts", []).append(dict(entry))
        inv.setdefault("total_pretax_credit_amounts", []).append(dict(entry))
        total += used
    return total


def give_back(ctx: Ctx, inv: dict) -> None:
    """A voided invoice returns the credit it used (`credits_application_invoice_voided`)."""
    for entry in inv.get("total_pretax_credit_amounts") or []:
        txn = ctx.state.get(entry.get("credit_balance_transaction"), TXN)
        if txn is None or txn["debit"] is None or txn["debit"]["type"] != "credits_applied":
            continue
        grant = ctx.state.objects[txn["credit_grant"]]
        applied = txn["debit"]["credits_applied"]
        _transaction(
            ctx.state,
            grant,
            "credit",
            "credits_application_invoice_voided",
            entry["amount"],
            ctx.now(),
            invoice=inv["id"],
            line=applied["invoice_line_item"],
            ctx=ctx,
        )


# credit grants -------------------------------------------------------------------------------------


def _customer(ctx: Ctx, p: dict) -> dict:
    if p.get("customer_account") and not p.get("customer"):
        raise no_such_param("account", p["customer_account"], "customer_account")
    if not p.get("customer"):
        raise missing("customer")
    return live_customer_param(ctx, p["customer"])


def _amount(p: dict) -> dict:
    amount = p.get("amount")
    if not isinstance(amount, dict):
        raise missing("amount")
    if amount.get("type") != "monetary":
        raise invalid("amount[type]", "Invalid type: must be monetary")
    monetary = amount.get("monetary")
    if not isinstance(monetary, dict):
        raise missing("amount[monetary]")
    if not monetary.get("currency"):
        raise missing("amount[monetary][currency]")
    currency = check_currency(monetary["currency"], "amount[monetary][currency]")
    value = as_int(monetary, "value")
    if value is None:
        raise missing("amount[monetary][value]")
    if value <= 0:
        raise invalid(
            "amount[monetary][value]",
            "Invalid amount: the value of a credit grant must be a positive integer.",
            "parameter_invalid_integer",
        )
    return _money(currency, value)


def _scope(ctx: Ctx, p: dict) -> dict:
    config = p.get("applicability_config")
    if not isinstance(config, dict):
        raise missing("applicability_config")
    scope = config.get("scope")
    if not isinstance(scope, dict):
        raise missing("applicability_config[scope]")
    has_type, prices = bool(scope.get("price_type")), scope.get("prices")
    if has_type and prices:
        raise invalid(
            "applicability_config[scope]",
            "You may only specify one of these parameters: price_type, prices.",
        )
    if has_type:
        return {"scope": {"price_type": scope["price_type"]}}
    if not prices:
        raise missing("applicability_config[scope][price_type]")
    out = []
    for i, item in enumerate(prices):
        name = f"applicability_config[scope][prices][{i}][id]"
        if not isinstance(item, dict) or not item.get("id"):
            raise missing(name)
        price = ctx.state.get(item["id"], "price")
        if price is None:
            raise no_such_param("price", item["id"], name)
        recurring = price.get("recurring") or {}
        if recurring.get("usage_type") != "metered" or not recurring.get("meter"):
            raise invalid(
                name,
                "Billing credits only apply to metered prices with a billing meter; "
                f"{price['id']} is not one.",
            )
        out.append({"id": price["id"]})
    return {"scope": {"price_type": None, "prices": out}}


@route("POST", "/v1/billing/credit_grants", "billing._credit_grant_create_params")
def credit_grants_create(ctx: Ctx):
    p = ctx.params
    cus = _customer(ctx, p)
    amount = _amount(p)
    scope = _scope(ctx, p)
    category = p.get("category") or "paid"
    if category not in ("paid", "promotional"):
        raise invalid("category", "Invalid category: must be one of paid or promotional")
    now = ctx.now()
    effective_at = as_int(p, "effective_at", now, minimum=0)
    expires_at = as_int(p, "expires_at", None, minimum=0)
    if expires_at is not None:
        if expires_at <= now:
            raise invalid("expires_at", "The expiration time must be in the future.")
        if expires_at <= effective_at:
            raise invalid("expires_at", "The expiration time must be after the effective time.")
    priority = as_int(p, "priority", DEFAULT_PRIORITY, minimum=0, maximum=100)
    grant = {
        "id": new_id("credgr_test", 40),
        "object": GRANT,
        "amount": amount,
        "applicability_config": scope,
        "category": category,
        "created": now,
        "customer": cus["id"],
        "customer_account": None,
        "effective_at": effective_at,
        "expires_at": expires_at,
        "livemode": False,
        "metadata": apply_metadata({}, p.get("metadata")),
        "name": p.get("name") or None,
        "priority": priority,
        "test_clock": None,
        "updated": now,
        "voided_at": None,
    }
    ctx.state.put(grant)
    ctx.emit("billing.credit_grant.created", grant)
    _transaction(
        ctx.state, grant, "credit", "credits_granted", amount["monetary"]["value"], effective_at, ctx=ctx
    )
    return ctx.render(grant)


def _grant(ctx: Ctx) -> dict:
    return get_or_404(ctx, ctx.path_args["id"], GRANT, GRANT)


@route("GET", "/v1/billing/credit_grants/{id}", "billing._credit_grant_retrieve_params")
def credit_grants_retrieve(ctx: Ctx):
    settle_expiries(ctx.state)
    return ctx.render(_grant(ctx))


@route("POST", "/v1/billing/credit_grants/{id}", "billing._credit_grant_update_params")
def credit_grants_update(ctx: Ctx):
    grant = _grant(ctx)
    p = ctx.params
    before = ctx.state.render(grant)
    if "expires_at" in p:
        if grant["voided_at"] is not None:
            raise invalid("expires_at", "You cannot update the expiration time of a voided credit grant.")
        if p["expires_at"] == "":
            grant["expires_at"] = None
        else:
            expires_at = as_int(p, "expires_at", minimum=0)
            if expires_at <= ctx.now():
                raise invalid("expires_at", "The expiration time must be in the future.")
            grant["expires_at"] = expires_at
    if "metadata" in p:
        grant["metadata"] = apply_metadata(grant["metadata"], p["metadata"])
    if any(grant[k] != before[k] for k in ("expires_at", "metadata")):
        grant["updated"] = ctx.now()
    ctx.state.put(grant)
    emit_changes(ctx, grant, before, "billing.credit_grant.updated")
    return ctx.render(grant)


@route("POST", "/v1/billing/credit_grants/{id}/expire", "billing._credit_grant_expire_params")
def credit_grants_expire(ctx: Ctx):
    settle_expiries(ctx.state)
    grant = _grant(ctx)
    now = ctx.now()
    if grant["voided_at"] is not None:
        raise invalid("id", "This credit grant has been voided and can no longer be expired.")
    if grant["expires_at"] is not None and grant["expires_at"] <= now:
        raise invalid("id", "This credit grant has already expired.")
    previous = {"expires_at": grant["expires_at"], "updated": grant["updated"]}
    grant["expires_at"] = now
    grant["updated"] = now
    ctx.state.put(grant)
    settle_expiries(ctx.state)
    ctx.emit("billing.credit_grant.updated", grant, previous)
    return ctx.render(grant)


@route("POST", "/v1/billing/credit_grants/{id}/void", "billing._credit_grant_void_grant_params")
def credit_grants_void(ctx: Ctx):
    settle_expiries(ctx.state)
    grant = _grant(ctx)
    now = ctx.now()
    if grant["voided_at"] is not None:
        raise invalid("id", "This credit grant has already been voided.")
    if grant["expires_at"] is not None and grant["expires_at"] <= now:
        raise invalid("id", "This credit grant has expired and can no longer be voided.")
    previous = {"voided_at": None, "updated": grant["updated"]}
    left = remaining(ctx.state, grant)
    grant["voided_at"] = now
    grant["updated"] = now
    ctx.state.put(grant)
    if left > 0:
        _transaction(ctx.state, grant, "debit", "credits_voided", left, now, ctx=ctx)
    ctx.emit("billing.credit_grant.updated", grant, previous)
    return ctx.render(grant)


@route("GET", "/v1/billing/credit_grants", "billing._credit_grant_list_params")
def credit_grants_list(ctx: Ctx):
    settle_expiries(ctx.state)
    p = ctx.params
    items = ctx.state.all(GRANT)
    if p.get("customer"):
        items = [g for g in items if g["customer"] == p["customer"]]
    return ctx.state.list_page(items, p, "/v1/billing/credit_grants", label=GRANT)


# the balance summary -------------------------------------------------------------------------------


def _matching_grants(ctx: Ctx, customer_id: str, flt) -> list[dict]:
    if not isinstance(flt, dict):
        raise missing("filter")
    kind = flt.get("type")
    if not kind:
        raise missing("filter[type]")
    grants = [g for g in ctx.state.all(GRANT) if g["customer"] == customer_id]
    if kind == "credit_grant":
        grant_id = flt.get("credit_grant")
        if not grant_id:
            raise missing("filter[credit_grant]")
        grant = ctx.state.get(grant_id, GRANT)
        if grant is None or grant["customer"] != customer_id:
            raise no_such_param(GRANT, grant_id, "filter[credit_grant]")
        return [grant]
    if kind != "applicability_scope":
        raise invalid("filter[type]", "Invalid type: must be one of applicability_scope or credit_grant")
    scope = flt.get("applicability_scope")
    if not isinstance(scope, dict):
        raise missing("filter[applicability_scope]")
    if scope.get("price_type"):
        wanted = scope["price_type"]
        return [g for g in grants if g["applicability_config"]["scope"].get("price_type") == wanted]
    prices = [p.get("id") for p in scope.get("prices") or [] if isinstance(p, dict)]
    if not prices:
        raise missing("filter[applicability_scope][price_type]")
    out = []
    for g in grants:
        grant_scope = g["applicability_config"]["scope"]
        ids = {p["id"] for p in grant_scope.get("prices") or []}
        if grant_scope.get("price_type") == "metered" or ids & set(prices):
            out.append(g)
    return out


@route("GET", "/v1/billing/credit_balance_summary", "billing._credit_balance_summary_retrieve_params")
def credit_balance_summary(ctx: Ctx):
    p = ctx.params
    cus = _customer(ctx, p)
    settle_expiries(ctx.state)
    grants = _matching_grants(ctx, cus["id"], p.get("filter"))
    totals: dict[str, int] = {}
    for grant in sorted(grants, key=lambda g: (g["created"], ctx.state.seq[g["id"]])):
        currency = grant["amount"]["monetary"]["currency"]
        totals.setdefault(currency, 0)
        if is_available(ctx.state, grant):
            totals[currency] += max(remaining(ctx.state, grant), 0)
    summary = {
        "object": "billing.credit_balance_summary",
        "balances": [
            {"available_balance": _money(c, v), "ledger_balance": _money(c, v)} for c, v in totals.items()
        ],
        "customer": cus["id"],
        "customer_account": None,
        "livemode": False,
    }
    if "customer" in ctx.expand:
        summary["customer"] = ctx.state.render(cus)
    return summary


# credit balance transactions -----------------------------------------------------------------------


@route(
    "GET",
    "/v1/billing/credit_balance_transactions/{id}",
    "billing._credit_balance_transaction_retrieve_params",
)
def credit_balance_transactions_retrieve(ctx: Ctx):
    settle_expiries(ctx.state)
    txn = ctx.state.get(ctx.path_args["id"], TXN)
    if txn is None:
        raise no_such(TXN, ctx.path_args["id"])
    return ctx.render(txn)


@route("GET", "/v1/billing/credit_balance_transactions", "billing._credit_balance_transaction_list_params")
def credit_balance_transactions_list(ctx: Ctx):
    p = ctx.params
    cus = _customer(ctx, p)
    settle_expiries(ctx.state)
    grant_ids = {g["id"] for g in ctx.state.all(GRANT) if g["customer"] == cus["id"]}
    if p.get("credit_grant"):
        if p["credit_grant"] not in grant_ids:
            raise no_such_param(GRANT, p["credit_grant"], "credit_grant")
        grant_ids = {p["credit_grant"]}
    items = [t for t in ctx.state.all(TXN) if t["credit_grant"] in grant_ids]
    return ctx.state.list_page(items, p, "/v1/billing/credit_balance_transactions", label=TXN)
