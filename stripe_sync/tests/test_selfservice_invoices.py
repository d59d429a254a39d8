"""GET /api/v1/invoices: the tenant's invoices from dj-stripe's mirror, which Stripe's invoice.*
webhooks keep current (created, finalized, voided, paid), newest first, paginated, isolated."""

import pytest
from rest_framework.test import APIClient

from stripe_sync.client import stripe_client
from stripe_sync.sync import tenant_stripe_sync
from stripe_sync.tests.factories import CustomerFactory, mirrored_invoice
from stripe_sync.tests.support import link_customer
from stripe_sync.tests.webhook_support import deliver

pytestmark = pytest.mark.django_db

URL = "/api/v1/invoices"


@pytest.fixture
def deliver_event(client, django_capture_on_commit_callbacks):
    return lambda event: deliver(client, event, django_capture_on_commit_callbacks)


def _invoice(customer_id: str, amount: int = 1500, *, finalize: bool = True) -> str:
    """An invoice of `amount` cents at the local Stripe server (finalized: open); returns its id."""
    client = stripe_client()
    client.v1.invoice_items.create(params={"customer": customer_id, "amount": amount, "currency": "usd"})
    invoice = client.v1.invoices.create(
        params={"customer": customer_id, "pending_invoice_items_behavior": "include"}
    )
    if finalize:
        client.v1.invoices.finalize_invoice(invoice.id)
    return invoice.id


def _event_for(server, event_type: str, invoice_id: str) -> dict:
    return [e for e in server.events(event_type) if e["data"]["object"]["id"] == invoice_id][-1]


def test_a_finalized_invoice_is_listed_from_its_webhook_with_stripes_fields(
    local_stripe, tenant, tenant_client, deliver_event
):
    customer_id = link_customer(tenant)
    invoice_id = _invoice(customer_id, 1500)
    event = deliver_event(_event_for(local_stripe, "invoice.finalized", invoice_id))
    assert event.status == "processed", event.result

    response = tenant_client.get(URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["count"], body["next"]) == (1, None)
    [row] = body["results"]
    at_stripe = local_stripe.get(invoice_id)
    assert row["id"] == invoice_id
    assert row["status"] == "open"
    assert row["number"] == at_stripe["number"]
    assert row["number"]
    assert (row["currency"], row["amount_due"], row["amount_paid"], row["amount_remaining"]) == (
        "usd",
        1500,
        0,
        1500,
    )
    assert (row["subtotal"], row["total"]) == (1500, 1500)
    assert row["hosted_invoice_url"] == at_stripe["hosted_invoice_url"]
    assert row["invoice_pdf"] == at_stripe["invoice_pdf"]
    assert row["created"].endswith("Z")
    assert row["period_start"]
    assert row["period_end"]


def test_a_voided_invoice_follows_its_webhook(local_stripe, tenant, tenant_client, deliver_event):
    customer_id = link_customer(tenant)
    invoice_id = _invoice(customer_id)
    deliver_event(_event_for(local_stripe, "invoice.finalized", invoice_id))
    stripe_client().v1.invoices.void_invoice(invoice_id)
    event = deliver_event(_event_for(local_stripe, "invoice.voided", invoice_id))
    assert event.status == "processed", event.result

    [row] = tenant_client.get(URL).json()["results"]
    assert row["status"] == "void"
    assert tenant_client.get(URL, {"status": "open"}).json()["count"] == 0
    assert tenant_client.get(URL, {"status": "void"}).json()["count"] == 1


def test_drafts_are_not_shown(local_stripe, tenant, tenant_client, deliver_event):
    customer_id = link_customer(tenant)
    invoice_id = _invoice(customer_id, finalize=False)
    event = deliver_event(_event_for(local_stripe, "invoice.created", invoice_id))
    assert event.status == "processed", event.result
    assert tenant_client.get(URL).json() == {"count": 0, "next": None, "results": []}


def test_sync_stripe_mirrors_the_tenants_invoices_too(local_stripe, tenant, tenant_client):
    customer_id = link_customer(tenant)
    paid = _invoice(customer_id, 700)
    stripe_client().v1.invoices.pay(paid, params={"paid_out_of_band": True})
    tenant_stripe_sync(tenant=tenant)

    [row] = tenant_client.get(URL).json()["results"]
    assert (row["id"], row["status"], row["amount_paid"], row["amount_remaining"]) == (paid, "paid", 700, 0)


def test_newest_first_and_paginated(tenant, tenant_client):
    customer = CustomerFactory()
    tenant.stripe_customer = customer
    tenant.save()
    for n in range(3):
        mirrored_invoice(customer, f"in_page{n}", status="paid", period_start=1_790_000_000 + n)
    from djstripe.models import Invoice

    for n in range(3):  # created is the column the list is ordered by
        Invoice.objects.filter(id=f"in_page{n}").update(created=f"2026-0{n + 1}-01T00:00:00Z")

    first = tenant_client.get(URL, {"limit": 2}).json()
    assert first["count"] == 3
    assert [row["id"] for row in first["results"]] == ["in_page2", "in_page1"]
    assert "offset=2" in first["next"]
    second = tenant_client.get(first["next"]).json()
    assert [row["id"] for row in second["results"]] == ["in_page0"]
    assert second["next"] is None


def test_another_tenants_invoices_never_appear(tenant, other_tenant, tenant_client):
    mine, theirs = CustomerFactory(), CustomerFactory()
    tenant.stripe_customer = mine
    tenant.save()
    other_tenant.stripe_customer = theirs
    other_tenant.save()
    mirrored_invoice(mine, "in_mine", status="paid", period_start=1_790_000_000)
    mirrored_invoice(theirs, "in_theirs", status="paid", period_start=1_790_000_000)

    assert [row["id"] for row in tenant_client.get(URL).json()["results"]] == ["in_mine"]


def test_a_tenant_never_onboarded_has_an_empty_list(tenant, tenant_client):
    mirrored_invoice(CustomerFactory(), "in_someone", status="paid", period_start=1_790_000_000)
    assert tenant_client.get(URL).json() == {"count": 0, "next": None, "results": []}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "draft"}, "status"),
        ({"status": ""}, "status"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
def test_bad_filters_are_400_naming_the_field(tenant_client, query, field):
    response = tenant_client.get(URL, query)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_a_platform_key_is_refused_and_a_key_is_required(platform_client):
    response = platform_client.get(URL)
    assert response.status_code == 403
    assert "tenant's own API key" in response.json()["error"]["message"]
    assert APIClient().get(URL).status_code == 401


def test_an_event_of_a_draft_deleted_since_is_ignored(local_stripe, tenant, tenant_client, deliver_event):
    customer_id = link_customer(tenant)
    invoice_id = _invoice(customer_id, finalize=False)
    stripe_client().v1.invoices.delete(invoice_id)

    event = deliver_event(_event_for(local_stripe, "invoice.created", invoice_id))

    assert event.status == "ignored"
    assert "no longer exists at Stripe" in event.result
    assert tenant_client.get(URL).json()["count"] == 0


def test_an_invoice_stripe_no_longer_knows_is_ignored(local_stripe, tenant, deliver_event):
    customer_id = link_customer(tenant)
    invoice_id = _invoice(customer_id, finalize=False)
    local_stripe.fail_next(3, status=404, path=f"/v1/invoices/{invoice_id}", method="GET")

    event = deliver_event(_event_for(local_stripe, "invoice.created", invoice_id))

    assert (event.status, event.result) == ("ignored", f"invoice {invoice_id} no longer exists at Stripe")
