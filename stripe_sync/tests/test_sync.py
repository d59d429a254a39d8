"""sync_stripe: Stripe's objects mirrored into dj-stripe's tables, every page of them."""

import pytest
from django.core.management import CommandError, call_command
from djstripe.models import Customer, Invoice, Price, Product, Subscription

from stripe_sync.catalog import meters_ensure
from stripe_sync.client import stripe_client
from stripe_sync.mirror import mirror_customer
from stripe_sync.models import StripeMeter
from stripe_sync.sync import stripe_sync_all
from stripe_sync.tasks.sync import sync_stripe
from stripe_sync.tests.onboarding_support import meter_with_price
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


def _clear_mirror():
    for model in (Invoice, Subscription, Customer, Price, Product):
        model.objects.all().delete()


@pytest.fixture
def account(local_stripe):
    """At Stripe: 2 metered prices (2 products), 105 customers (more than one page), 3 of them with
    a subscription, and the subscriptions' first invoices."""
    meter_with_price("api_calls")
    meter_with_price("storage_gb")
    meters_ensure()
    price = StripeMeter.objects.get(event_name="api_calls").stripe_price_id
    client = stripe_client()
    customers = [client.v1.customers.create(params={"name": f"c{n}"}) for n in range(105)]
    for customer in customers[:3]:
        client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price}]})
    _clear_mirror()
    return customers


def test_sync_mirrors_every_kind_and_page(account, local_stripe):
    result = stripe_sync_all()
    invoices = len(local_stripe.objects("invoice"))
    assert result.counts == {
        "products": 2,
        "prices": 2,
        "customers": 105,
        "subscriptions": 3,
        "invoices": invoices,
    }
    assert invoices >= 3
    assert result.failed == 0
    assert Customer.objects.count() == 105
    assert Subscription.objects.count() == 3
    assert Invoice.objects.count() == invoices
    assert Price.objects.count() == 2
    assert Product.objects.count() == 2
    # Again: the same rows, updated, not copies.
    stripe_sync_all()
    assert Customer.objects.count() == 105


def test_command_prints_counts(account, local_stripe):
    invoices = len(local_stripe.objects("invoice"))
    assert run_command("sync_stripe") == [
        f"mirrored products: 2, prices: 2, customers: 105, subscriptions: 3, invoices: {invoices}, failed: 0"
    ]


def test_command_resyncs_one_tenant(account, local_stripe, tenant):
    customer = account[0]
    tenant.stripe_customer = mirror_customer(customer)
    tenant.save()
    Invoice.objects.all().delete()
    Subscription.objects.all().delete()
    lines = run_command("sync_stripe", "--tenant", tenant.slug)
    assert lines == ["mirrored customers: 1, subscriptions: 1, invoices: 1, failed: 0"]
    assert Subscription.objects.get().customer.id == customer.id


def test_command_errors(local_stripe, settings, tenant):
    with pytest.raises(CommandError, match="has no Stripe customer"):
        call_command("sync_stripe", "--tenant", tenant.slug)
    with pytest.raises(CommandError, match="no tenant with slug, external id or id 'nobody'"):
        call_command("sync_stripe", "--tenant", "nobody")
    settings.STRIPE_API_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_API_KEY is not set"):
        call_command("sync_stripe")


def test_task_runs_the_same_service(account):
    assert sync_stripe.apply().get()["customers"] == 105


def test_every_mirrored_kind_lists_and_opens_in_admin(account, admin_client):
    """dj-stripe's admins read fields that newer API versions dropped (an invoice's `paid`): the
    mirror restores them, so each list and change page of what sync_stripe mirrors answers 200."""
    stripe_sync_all()
    for model in (Invoice, Subscription, Customer, Price, Product):
        name = model._meta.model_name
        assert admin_client.get(f"/admin/djstripe/{name}/").status_code == 200, name
        first = model.objects.order_by("pk").first()
        assert admin_client.get(f"/admin/djstripe/{name}/{first.pk}/change/").status_code == 200, name
    invoice = Invoice.objects.order_by("pk").first()
    assert invoice.paid == (invoice.stripe_data["status"] == "paid")
