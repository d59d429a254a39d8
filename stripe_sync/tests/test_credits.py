"""Credit grants: the row first, then Stripe with an Idempotency-Key from the row (a retry never
grants twice), Stripe's answer or error recorded, voids; and GET /api/v1/billing/credits."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from stripe_sync.client import stripe_client
from stripe_sync.credits import (
    CREDIT_GRANT_NOT_ONBOARDED,
    GRANT_METADATA_KEY,
    CreditGrantError,
    credit_grant_create,
    credit_grant_send,
    credit_grant_void,
)
from stripe_sync.models import CreditGrant
from stripe_sync.selfservice import NOTE_CREDITS_NOT_ONBOARDED
from stripe_sync.tests.factories import CircuitBreakerFactory, CreditGrantFactory
from stripe_sync.tests.support import link_customer

pytestmark = pytest.mark.django_db

GRANTS = "/v1/billing/credit_grants"
SUMMARY = "/v1/billing/credit_balance_summary"
URL = "/api/v1/billing/credits"


@pytest.fixture
def customer_id(local_stripe, tenant):
    return link_customer(tenant)


def _grant(tenant, **fields) -> CreditGrant:
    values = {"amount_minor": 5000, "currency": "usd", "category": "promotional", "reason": "outage apology"}
    return credit_grant_create(tenant=tenant, **{**values, **fields})


def test_a_grant_is_made_at_stripe_with_a_key_from_its_row(local_stripe, tenant, customer_id, admin_user):
    expires = (timezone.now() + timedelta(days=30)).replace(microsecond=0)

    grant = _grant(tenant, expires_at=expires, actor=admin_user)

    assert grant.status == CreditGrant.Status.ACTIVE, grant.last_error
    [sent] = local_stripe.requests_to(GRANTS, "POST")
    assert sent.idempotency_key == f"credit-grant-{grant.pk}-create"
    assert sent.params["customer"] == customer_id
    assert sent.params["amount"] == {"type": "monetary", "monetary": {"currency": "usd", "value": "5000"}}
    assert sent.params["applicability_config"] == {"scope": {"price_type": "metered"}}
    assert sent.params["category"] == "promotional"
    assert sent.params["expires_at"] == str(int(expires.timestamp()))
    assert sent.params["metadata"][GRANT_METADATA_KEY] == str(grant.pk)
    at_stripe = local_stripe.get(grant.stripe_id)
    assert at_stripe["amount"]["monetary"] == {"currency": "usd", "value": 5000}
    assert (grant.granted_by, grant.granted_by_name, grant.reason) == (
        admin_user,
        admin_user.username,
        "outage apology",
    )


def test_a_lost_answer_is_retried_with_the_same_key_and_grants_once(local_stripe, tenant, customer_id):
    # Stripe makes the grant and the answer is lost: stripe-python retries with the same key.
    local_stripe.fail_next(1, status=500, path=GRANTS, method="POST", when="after")

    grant = _grant(tenant)

    assert grant.status == CreditGrant.Status.ACTIVE
    [made] = local_stripe.objects("billing.credit_grant")
    assert grant.stripe_id == made["id"]
    assert [r.replayed for r in local_stripe.requests_to(GRANTS, "POST")] == [False, True]


def test_no_answer_leaves_it_pending_and_sending_again_grants_once(local_stripe, tenant, customer_id):
    local_stripe.fail_next(3, status=500, path=GRANTS, method="POST")

    grant = _grant(tenant)

    assert grant.status == CreditGrant.Status.PENDING
    assert "HTTP 500" in grant.last_error
    grant = credit_grant_send(grant=grant)
    assert (grant.status, grant.attempts, grant.last_error) == (CreditGrant.Status.ACTIVE, 2, "")
    assert [g["id"] for g in local_stripe.objects("billing.credit_grant")] == [grant.stripe_id]


def test_sending_again_after_the_key_expired_adopts_the_grant_stripe_already_made(
    local_stripe, tenant, customer_id
):
    # An attempt made the grant at Stripe, its answer was lost, and the Idempotency-Key is long gone.
    grant = CreditGrantFactory(
        tenant=tenant, customer_id=customer_id, stripe_id="", status=CreditGrant.Status.PENDING, attempts=1
    )
    made = stripe_client().v1.billing.credit_grants.create(
        params={
            "customer": customer_id,
            "amount": {"type": "monetary", "monetary": {"currency": "usd", "value": 5000}},
            "applicability_config": {"scope": {"price_type": "metered"}},
            "metadata": {GRANT_METADATA_KEY: str(grant.pk)},
        }
    )
    local_stripe.clear_requests()

    grant = credit_grant_send(grant=grant)

    assert (grant.status, grant.stripe_id) == (CreditGrant.Status.ACTIVE, made.id)
    assert local_stripe.requests_to(GRANTS, "POST") == []
    assert len(local_stripe.objects("billing.credit_grant")) == 1


def test_stripe_refusing_marks_it_failed_with_stripes_message(local_stripe, tenant, customer_id):
    local_stripe.fail_next(1, status=400, path=GRANTS, method="POST")
    grant = _grant(tenant)
    assert grant.status == CreditGrant.Status.FAILED
    assert grant.last_error.startswith("Stripe: ")
    assert local_stripe.objects("billing.credit_grant") == []


def test_a_tenant_without_a_stripe_customer_cannot_receive_credit(local_stripe, tenant):
    with pytest.raises(CreditGrantError) as refused:
        _grant(tenant)
    assert refused.value.field == "tenant"
    assert str(refused.value) == CREDIT_GRANT_NOT_ONBOARDED.format(slug=tenant.slug)
    assert CreditGrant.objects.count() == 0
    assert local_stripe.requests_to(GRANTS) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount_minor": 0}, "amount"),
        ({"currency": "dollars"}, "currency"),
        ({"reason": "  "}, "reason"),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, "expires_at"),
    ],
)
def test_bad_grants_are_refused_naming_the_field(local_stripe, tenant, customer_id, fields, field):
    with pytest.raises(CreditGrantError) as refused:
        _grant(tenant, **fields)
    assert refused.value.field == field
    assert CreditGrant.objects.count() == 0


def test_void_voids_at_stripe_and_records_who_and_why(local_stripe, tenant, customer_id, admin_user):
    grant = _grant(tenant)

    voided = credit_grant_void(grant=grant, reason="granted twice by mistake", actor=admin_user)

    assert voided.status == CreditGrant.Status.VOIDED
    assert (voided.voided_by, voided.void_reason) == (admin_user, "granted twice by mistake")
    assert local_stripe.get(grant.stripe_id)["voided_at"] is not None
    with pytest.raises(CreditGrantError):
        credit_grant_void(grant=voided, reason="again", actor=admin_user)
    assert len(local_stripe.requests_to(f"{GRANTS}/{grant.stripe_id}/void")) == 1


# --- GET /api/v1/billing/credits -------------------------------------------------------------------


def test_the_balance_comes_from_stripe_and_the_grants_from_the_platform(
    local_stripe, tenant, tenant_client, customer_id
):
    grant = _grant(tenant)

    response = tenant_client.get(URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["balance"] == {"available": 5000, "ledger": 5000, "currency": "usd"}
    assert body["balances"] == [body["balance"]]
    assert body["note"] is None
    assert [(g["id"], g["amount"], g["currency"], g["category"], g["status"]) for g in body["grants"]] == [
        (grant.pk, 5000, "usd", "promotional", "active")
    ]
    [asked] = local_stripe.requests_to(SUMMARY, "GET")
    assert asked.params["customer"] == customer_id
    assert asked.params["filter"] == {
        "type": "applicability_scope",
        "applicability_scope": {"price_type": "metered"},
    }


def test_a_voided_grant_leaves_the_balance(local_stripe, tenant, tenant_client, customer_id):
    credit_grant_void(grant=_grant(tenant), reason="mistake")
    body = tenant_client.get(URL).json()
    assert body["balance"]["available"] == 0
    assert body["grants"][0]["status"] == "voided"


def test_stripe_unreachable_still_lists_the_grants(local_stripe, tenant, tenant_client, customer_id):
    _grant(tenant)
    local_stripe.fail_next(5, status=503, path=SUMMARY)

    response = tenant_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["balance"], body["balances"]) == (None, None)
    assert "HTTP 503" in body["note"]
    assert len(body["grants"]) == 1


def test_an_open_circuit_breaker_lists_the_grants_without_asking_stripe(
    local_stripe, tenant, tenant_client, customer_id
):
    _grant(tenant)
    CircuitBreakerFactory(open_until=timezone.now() + timedelta(minutes=5), failures=5)

    body = tenant_client.get(URL).json()

    assert body["balance"] is None
    assert "circuit breaker" in body["note"]
    assert len(body["grants"]) == 1
    assert local_stripe.requests_to(SUMMARY) == []


def test_a_tenant_never_onboarded_has_no_balance_and_stripe_is_not_asked(local_stripe, tenant_client):
    body = tenant_client.get(URL).json()
    assert body == {"balance": None, "balances": None, "note": NOTE_CREDITS_NOT_ONBOARDED, "grants": []}
    assert local_stripe.requests == []


def test_an_expired_grant_shows_as_expired_and_other_tenants_grants_never_show(
    local_stripe, tenant, other_tenant, tenant_client
):
    mine = CreditGrantFactory(tenant=tenant, expires_at=timezone.now() - timedelta(days=1))
    CreditGrantFactory(tenant=other_tenant)
    grants = tenant_client.get(URL).json()["grants"]
    assert [(g["id"], g["status"]) for g in grants] == [(mine.pk, "expired")]


def test_a_platform_key_is_refused_and_a_key_is_required(platform_client):
    response = platform_client.get(URL)
    assert response.status_code == 403
    assert "tenant's own API key" in response.json()["error"]["message"]
    assert APIClient().get(URL).status_code == 401
