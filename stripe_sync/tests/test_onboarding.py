"""Onboarding against the local Stripe server: customers, meters, prices, subscriptions, linking."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from djstripe.models import Customer

from metering.models import Price
from stripe_sync.catalog import OnboardingError, meters_ensure
from stripe_sync.client import stripe_client
from stripe_sync.models import StripeMeter, TenantSubscription
from stripe_sync.onboarding import tenant_link, tenant_onboard
from stripe_sync.subscriptions import tenant_subscription_cancel, tenant_subscription_ensure
from stripe_sync.tests.factories import StripeMeterFactory
from stripe_sync.tests.onboarding_support import meter_with_price
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def free_tenant(db):
    return TenantFactory(slug="free-one", name="Free One", plan=Tenant.Plan.FREE)


def _customers(local_stripe):
    return local_stripe.objects("customer")


def test_onboarding_twice_makes_one_customer(local_stripe, free_tenant):
    meter_with_price()
    first = tenant_onboard(tenant=free_tenant)
    second = tenant_onboard(tenant=Tenant.objects.get(pk=free_tenant.pk))

    customers = _customers(local_stripe)
    assert len(customers) == 1
    assert customers[0]["metadata"]["tenant_id"] == str(free_tenant.pk)
    assert first.customer_created
    assert not second.customer_created
    assert first.customer.id == second.customer.id == customers[0]["id"]
    free_tenant.refresh_from_db()
    assert free_tenant.stripe_customer_id == customers[0]["id"]
    assert Customer.objects.filter(id=customers[0]["id"]).exists()
    # A free tenant gets no subscription at onboarding.
    assert local_stripe.objects("subscription") == []
    creates = local_stripe.requests_to("/v1/customers", "POST")
    assert [r.idempotency_key for r in creates] == [f"tenant-{free_tenant.pk}-customer-create"]


def test_lagging_search_and_a_lost_link_still_make_one_customer(local_stripe, free_tenant):
    local_stripe.search_delay = 120  # Stripe's search has not seen the new customer yet
    tenant_onboard(tenant=free_tenant)
    # As if the process died after Stripe made the customer but before the link was saved.
    Tenant.objects.filter(pk=free_tenant.pk).update(stripe_customer=None)
    Customer.objects.all().delete()

    result = tenant_onboard(tenant=Tenant.objects.get(pk=free_tenant.pk))

    assert len(_customers(local_stripe)) == 1
    assert not result.customer_created
    assert [r.replayed for r in local_stripe.requests_to("/v1/customers", "POST")] == [False, True]
    assert Tenant.objects.get(pk=free_tenant.pk).stripe_customer_id == _customers(local_stripe)[0]["id"]


def test_an_existing_customer_is_found_by_its_tenant_metadata(local_stripe, free_tenant):
    existing = stripe_client().v1.customers.create(
        params={"name": "made by hand", "metadata": {"tenant_id": str(free_tenant.pk)}}
    )
    local_stripe.clear_requests()
    result = tenant_onboard(tenant=free_tenant)

    assert result.customer.id == existing.id
    assert not result.customer_created
    assert len(_customers(local_stripe)) == 1
    assert local_stripe.requests_to("/v1/customers", "POST") == []


def test_a_metered_tenant_gets_one_subscription_with_every_metered_price(local_stripe, tenant):
    meter_with_price("api_calls")
    meter_with_price("storage_gb", unit_amount=Decimal("2"))
    first = tenant_onboard(tenant=tenant)
    again = tenant_onboard(tenant=tenant)

    subscriptions = local_stripe.objects("subscription")
    assert len(subscriptions) == 1
    assert first.subscription.id == again.subscription.id == subscriptions[0]["id"]
    assert subscriptions[0]["status"] == "active"
    prices = {item["price"]["id"] for item in subscriptions[0]["items"]["data"]}
    assert prices == set(StripeMeter.objects.values_list("stripe_price_id", flat=True))
    assert TenantSubscription.objects.get(tenant=tenant).subscription_id == subscriptions[0]["id"]
    # dj-stripe reads the period on the subscription; API versions since 2025 keep it on items.
    assert first.subscription.current_period_end is not None


def test_meters_and_prices_are_made_once_with_stripes_shapes(local_stripe):
    per_unit = meter_with_price("api_calls", unit_amount=Decimal("0.25"))
    meter_with_price("exports", model=Price.Model.PACKAGE, unit_amount=Decimal("100"), package_size=1000)
    tiers = [
        {"up_to": 1000, "unit_amount": "0.5", "flat_amount": "0"},
        {"up_to": None, "unit_amount": "0.1", "flat_amount": "200"},
    ]
    meter_with_price("tokens", model=Price.Model.GRADUATED, tiers=tiers)
    meter_with_price("seats", model=Price.Model.VOLUME, tiers=tiers)

    first = meters_ensure()
    second = meters_ensure()

    assert all(r.meter_created and r.price_created for r in first)
    assert not any(r.meter_created or r.price_created for r in second)
    meters = {m["event_name"]: m for m in local_stripe.objects("billing.meter")}
    assert sorted(meters) == ["api_calls", "exports", "seats", "tokens"]
    api = meters["api_calls"]
    assert api["default_aggregation"]["formula"] == "sum"
    assert api["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    assert api["value_settings"] == {"event_payload_key": "value"}
    assert len(local_stripe.objects("price")) == 4
    assert len(local_stripe.objects("product")) == 4

    rows = {row.event_name: row for row in StripeMeter.objects.all()}
    assert rows["api_calls"].meter == per_unit
    assert rows["api_calls"].stripe_meter_id == api["id"]

    def price(code):
        return local_stripe.get(rows[code].stripe_price_id, expand=["tiers"])

    unit = price("api_calls")
    assert unit["recurring"]["usage_type"] == "metered"
    assert unit["recurring"]["meter"] == api["id"]
    assert unit["billing_scheme"] == "per_unit"
    assert Decimal(unit["unit_amount_decimal"]) == Decimal("0.25")
    assert unit["lookup_key"] == "metered:api_calls"
    package = price("exports")
    assert package["transform_quantity"] == {"divide_by": 1000, "round": "up"}
    assert Decimal(package["unit_amount_decimal"]) == Decimal("100")
    graduated = price("tokens")
    assert (graduated["billing_scheme"], graduated["tiers_mode"]) == ("tiered", "graduated")
    assert [t["up_to"] for t in graduated["tiers"]] == [1000, None]
    assert Decimal(graduated["tiers"][1]["flat_amount_decimal"]) == Decimal("200")
    assert Decimal(graduated["tiers"][1]["unit_amount_decimal"]) == Decimal("0.1")
    assert price("seats")["tiers_mode"] == "volume"


def test_an_existing_billing_meter_is_found_by_event_name(local_stripe):
    meter_with_price("api_calls")
    made = stripe_client().v1.billing.meters.create(
        params={
            "display_name": "by hand",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    [result] = meters_ensure()
    assert not result.meter_created
    assert result.stripe_meter.stripe_meter_id == made.id
    assert len(local_stripe.objects("billing.meter")) == 1


def test_a_billing_meter_with_other_payload_keys_is_refused(local_stripe):
    meter_with_price("api_calls")
    stripe_client().v1.billing.meters.create(
        params={
            "display_name": "by hand",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "customer"},
        }
    )
    with pytest.raises(OnboardingError, match="stripe_customer_id"):
        meters_ensure()


def test_a_changed_local_price_makes_a_new_price_and_moves_the_subscription(local_stripe, tenant):
    meter = meter_with_price("api_calls")
    first = tenant_onboard(tenant=tenant)
    old_price = StripeMeter.objects.get(meter=meter).stripe_price_id
    Price.objects.filter(meter=meter).update(unit_amount=Decimal("0.75"))

    meters_ensure()
    subscription = tenant_subscription_ensure(tenant=tenant)

    new_price = StripeMeter.objects.get(meter=meter).stripe_price_id
    assert new_price != old_price
    assert local_stripe.get(new_price)["lookup_key"] == "metered:api_calls"
    assert local_stripe.get(old_price)["lookup_key"] is None
    assert subscription.id == first.subscription.id
    items = local_stripe.get(subscription.id)["items"]["data"]
    assert [item["price"]["id"] for item in items] == [new_price]


def test_cancel_then_ensure_makes_a_new_subscription(local_stripe, tenant):
    meter_with_price()
    first = tenant_onboard(tenant=tenant).subscription

    canceled = tenant_subscription_cancel(tenant=tenant, reason="invoice.payment_failed")
    assert canceled.id == first.id
    assert canceled.status == "canceled"
    assert local_stripe.get(first.id)["status"] == "canceled"
    assert tenant_subscription_cancel(tenant=tenant, reason="again").status == "canceled"

    second = tenant_subscription_ensure(tenant=tenant)
    assert second.id != first.id
    assert second.status == "active"
    live = [s for s in local_stripe.objects("subscription") if s["status"] == "active"]
    assert [s["id"] for s in live] == [second.id]


def test_a_subscription_canceled_at_stripe_is_replaced_not_replayed(local_stripe, tenant):
    # Found by the reliability drill: the customer canceled in Stripe (not through the platform),
    # then attached a card; the create's Idempotency-Key replayed the first, now canceled,
    # subscription as "active" and no new one was made.
    meter_with_price()
    first = tenant_onboard(tenant=tenant).subscription
    stripe_client().v1.subscriptions.cancel(first.id)

    second = tenant_subscription_ensure(tenant=tenant)
    assert second.id != first.id
    assert second.status == "active"
    live = [s["id"] for s in local_stripe.objects("subscription") if s["status"] == "active"]
    assert live == [second.id]


def test_ensure_adopts_the_subscription_checkout_made(local_stripe, free_tenant):
    meter_with_price()
    tenant_onboard(tenant=free_tenant)
    price = StripeMeter.objects.get().stripe_price_id
    session = stripe_client().v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": free_tenant.stripe_customer_id,
            "line_items": [{"price": price}],
            "success_url": "https://localhost/ok",
        }
    )
    local_stripe.complete_checkout_session(session.id)

    subscription = tenant_subscription_ensure(tenant=free_tenant)

    assert [s["id"] for s in local_stripe.objects("subscription")] == [subscription.id]


# --- linking what an operator made at Stripe --------------------------------------------------


@pytest.fixture
def catalogue(local_stripe):
    meter_with_price()
    meters_ensure()
    return StripeMeter.objects.get()


def _customer(**metadata):
    return stripe_client().v1.customers.create(params={"name": "by hand", "metadata": metadata})


def _subscription(customer_id, price_id):
    return stripe_client().v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"price": price_id}]}
    )


def test_link_checks_and_saves_customer_and_subscription(local_stripe, free_tenant, catalogue):
    customer = _customer()
    subscription = _subscription(customer.id, catalogue.stripe_price_id)

    result = tenant_link(tenant=free_tenant, customer_id=customer.id, subscription_id=subscription.id)

    free_tenant.refresh_from_db()
    assert free_tenant.stripe_customer_id == customer.id
    assert result.subscription.id == subscription.id
    assert TenantSubscription.objects.get(tenant=free_tenant).subscription_id == subscription.id
    assert local_stripe.get(customer.id)["metadata"]["tenant_id"] == str(free_tenant.pk)


def _assert_nothing_saved(tenant):
    tenant.refresh_from_db()
    assert tenant.stripe_customer_id is None
    assert not TenantSubscription.objects.filter(tenant=tenant).exists()
    assert not Customer.objects.exists()


def test_link_refuses_an_unknown_customer(local_stripe, free_tenant, catalogue):
    with pytest.raises(OnboardingError, match="no customer cus_nothere at Stripe"):
        tenant_link(tenant=free_tenant, customer_id="cus_nothere")
    with pytest.raises(OnboardingError, match="not a Stripe customer id"):
        tenant_link(tenant=free_tenant, customer_id="sub_123")
    _assert_nothing_saved(free_tenant)


def test_link_refuses_a_deleted_customer(local_stripe, free_tenant, catalogue):
    customer = _customer()
    stripe_client().v1.customers.delete(customer.id)
    with pytest.raises(OnboardingError, match="is deleted"):
        tenant_link(tenant=free_tenant, customer_id=customer.id)
    _assert_nothing_saved(free_tenant)


def test_link_refuses_a_subscription_of_another_customer(local_stripe, free_tenant, catalogue):
    mine, theirs = _customer(), _customer()
    subscription = _subscription(theirs.id, catalogue.stripe_price_id)
    with pytest.raises(OnboardingError, match=f"belongs to customer {theirs.id}"):
        tenant_link(tenant=free_tenant, customer_id=mine.id, subscription_id=subscription.id)
    _assert_nothing_saved(free_tenant)
    assert "tenant_id" not in local_stripe.get(mine.id)["metadata"]


def test_link_refuses_a_subscription_without_the_metered_price(local_stripe, free_tenant, catalogue):
    customer = _customer()
    other = stripe_client().v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Support"},
        }
    )
    subscription = _subscription(customer.id, other.id)
    with pytest.raises(OnboardingError, match="none of the platform's metered prices"):
        tenant_link(tenant=free_tenant, customer_id=customer.id, subscription_id=subscription.id)
    _assert_nothing_saved(free_tenant)


def test_link_refuses_a_customer_of_another_tenant(local_stripe, free_tenant, other_tenant, catalogue):
    customer = _customer(tenant_id=str(other_tenant.pk))
    with pytest.raises(OnboardingError, match=f"belongs to tenant id {other_tenant.pk}"):
        tenant_link(tenant=free_tenant, customer_id=customer.id)
    tenant_link(tenant=other_tenant, customer_id=customer.id)
    with pytest.raises(OnboardingError, match="already linked to tenant tenant-b"):
        tenant_link(tenant=free_tenant, customer_id=customer.id)
    free_tenant.refresh_from_db()
    assert free_tenant.stripe_customer_id is None


# --- the command ------------------------------------------------------------------------------


def test_command_onboards_and_prints_what_it_did(local_stripe, free_tenant):
    meter_with_price()
    lines = run_command("onboard_tenant", free_tenant.slug)
    customer_id = _customers(local_stripe)[0]["id"]
    assert lines[0] == f"tenant free-one: Stripe customer {customer_id} (created)"
    assert "api_calls: meter mtr_" in lines[1]
    assert "(created)" in lines[1]
    assert run_command("onboard_tenant", str(free_tenant.pk))[0].endswith("(found)")


def test_command_links_by_id(local_stripe, free_tenant, catalogue):
    customer = _customer()
    subscription = _subscription(customer.id, catalogue.stripe_price_id)
    lines = run_command(
        "onboard_tenant", "free-one", "--customer", customer.id, "--subscription", subscription.id
    )
    assert lines[0] == f"tenant free-one: Stripe customer {customer.id} (found)"
    assert lines[-1] == f"  subscription {subscription.id} (active)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "no tenant with slug, external id or id 'nobody'"),
        (["free-one", "--subscription", "sub_1"], "--subscription needs --customer"),
        (["free-one", "--customer", "cus_nothere"], "no customer cus_nothere at Stripe"),
    ],
)
def test_command_errors_are_one_line(local_stripe, free_tenant, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("onboard_tenant", *args)


def test_command_says_when_stripe_is_not_configured(settings, free_tenant):
    settings.STRIPE_API_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_API_KEY is not set"):
        call_command("onboard_tenant", "free-one")


def test_command_reports_stripe_errors_in_one_line(local_stripe, free_tenant):
    local_stripe.fail_next(5, status=500, path="/v1/customers/search")  # more than the retries
    with pytest.raises(CommandError, match=r"^Stripe: "):
        call_command("onboard_tenant", "free-one")
    assert Tenant.objects.get(pk=free_tenant.pk).stripe_customer_id is None


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_action_asks_then_onboards_and_logs(local_stripe, admin_client, free_tenant):
    meter_with_price()
    url = "/admin/tenants/tenant/"
    form = {"action": "onboard_to_stripe", "_selected_action": [free_tenant.pk]}

    confirm = admin_client.post(url, form)
    assert confirm.status_code == 200
    assert b"Onboard to Stripe" in confirm.content
    assert b"free-one" in confirm.content
    assert _customers(local_stripe) == []

    done = admin_client.post(url, {**form, "apply": "1"}, follow=True)
    customer_id = _customers(local_stripe)[0]["id"]
    assert customer_id in done.content.decode()
    assert Tenant.objects.get(pk=free_tenant.pk).stripe_customer_id == customer_id
    entry = LogEntry.objects.get(object_id=str(free_tenant.pk))
    assert customer_id in entry.change_message

    page = admin_client.get(f"/admin/tenants/tenant/{free_tenant.pk}/change/").content.decode()
    customer_pk = Customer.objects.get(id=customer_id).pk
    assert f"/admin/djstripe/customer/{customer_pk}/change/" in page


def test_admin_action_shows_errors_as_messages(settings, admin_client, free_tenant):
    settings.STRIPE_API_KEY = ""
    form = {"action": "onboard_to_stripe", "_selected_action": [free_tenant.pk], "apply": "1"}
    page = admin_client.post("/admin/tenants/tenant/", form, follow=True).content.decode()
    assert "STRIPE_API_KEY is not set" in page
    assert not LogEntry.objects.exists()


def test_stripe_meter_admin_creates_at_stripe(local_stripe, admin_client):
    meter = meter_with_price()
    row = StripeMeterFactory(meter=meter, event_name="api_calls")
    form = {"action": "create_at_stripe", "_selected_action": [row.pk]}
    page = admin_client.post("/admin/stripe_sync/stripemeter/", form, follow=True).content.decode()
    row.refresh_from_db()
    assert row.stripe_meter_id
    assert row.stripe_price_id
    assert row.stripe_meter_id in page
    assert admin_client.get("/admin/stripe_sync/stripemeter/").status_code == 200
