"""Credit grants in admin: "Grant credit" (exact minor units, onboarded tenants, a future expiry, a
reason), the list, "Void at Stripe"; a view-only operator can look and do nothing."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from stripe_sync.credits import CREDIT_GRANT_NOT_ONBOARDED
from stripe_sync.models import CreditGrant
from stripe_sync.tests.support import link_customer

pytestmark = pytest.mark.django_db

ADD = "/admin/stripe_sync/creditgrant/add/"
LIST = "/admin/stripe_sync/creditgrant/"
GRANTS = "/v1/billing/credit_grants"


@pytest.fixture
def viewer_client(django_user_model):
    """An operator holding every view permission and nothing else."""
    user = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(user)
    return client


def _form(tenant, **fields) -> dict:
    return {
        "tenant": tenant.pk,
        "amount": "12.50",
        "currency": "USD",
        "category": "promotional",
        "expires_at_0": "",
        "expires_at_1": "",
        "reason": "Apology for the outage of 3 November",
        **fields,
    }


def _grant(admin_client, tenant, capture, **fields):
    with capture(execute=True):
        return admin_client.post(ADD, _form(tenant, **fields), follow=True)


def test_an_operator_grants_credit_in_the_currencys_minor_units(
    admin_client, admin_user, local_stripe, tenant, django_capture_on_commit_callbacks
):
    customer_id = link_customer(tenant)
    expires = timezone.now() + timedelta(days=60)

    page = _grant(
        admin_client,
        tenant,
        django_capture_on_commit_callbacks,
        expires_at_0=expires.strftime("%Y-%m-%d"),
        expires_at_1="12:00:00",
    )

    assert page.status_code == 200
    grant = CreditGrant.objects.get()
    assert (grant.amount_minor, grant.currency, grant.category) == (1250, "usd", "promotional")
    assert (grant.status, grant.granted_by, grant.reason) == (
        "active",
        admin_user,
        "Apology for the outage of 3 November",
    )
    assert grant.expires_at.date() == expires.date()
    [sent] = local_stripe.requests_to(GRANTS, "POST")
    assert sent.params["customer"] == customer_id
    assert sent.params["amount"]["monetary"] == {"currency": "usd", "value": "1250"}
    assert LogEntry.objects.filter(
        object_id=str(grant.pk), change_message__startswith="Granted at Stripe"
    ).exists()
    listed = admin_client.get(LIST).content.decode()
    assert "12.50 USD" in listed
    assert "Apology for the outage" in listed


def test_a_zero_decimal_currency_is_whole_units(
    admin_client, local_stripe, tenant, django_capture_on_commit_callbacks
):
    link_customer(tenant)
    _grant(admin_client, tenant, django_capture_on_commit_callbacks, amount="1500", currency="jpy")
    assert CreditGrant.objects.get().amount_minor == 1500


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"amount": "12.345"}, "amount", "USD has 2 decimal places"),
        ({"amount": "10.5", "currency": "jpy"}, "amount", "JPY has 0 decimal places"),
        ({"amount": "0"}, "amount", "greater than or equal to 0.01"),
        ({"currency": "dollars"}, "currency", "Ensure this value has at most 3 characters"),
        ({"reason": ""}, "reason", "This field is required"),
        ({"expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"}, "expires_at", "must be in the future"),
    ],
)
def test_a_bad_grant_is_a_form_error_and_nothing_is_granted(
    admin_client, local_stripe, tenant, django_capture_on_commit_callbacks, fields, field, message
):
    link_customer(tenant)
    page = _grant(admin_client, tenant, django_capture_on_commit_callbacks, **fields)
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert CreditGrant.objects.count() == 0
    assert local_stripe.requests_to(GRANTS) == []


def test_a_tenant_not_onboarded_is_a_clear_form_error(
    admin_client, local_stripe, tenant, django_capture_on_commit_callbacks
):
    page = _grant(admin_client, tenant, django_capture_on_commit_callbacks)
    assert page.context["adminform"].form.errors["tenant"] == [
        CREDIT_GRANT_NOT_ONBOARDED.format(slug=tenant.slug)
    ]
    assert CreditGrant.objects.count() == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_operator_is_told_what_stripe_answered_once_the_grant_is_committed(
    admin_client, local_stripe, tenant
):
    # A real commit: the grant goes to Stripe after the add form's transaction, as in production.
    link_customer(tenant)
    page = admin_client.post(ADD, _form(tenant), follow=True).content.decode()
    grant = CreditGrant.objects.get()
    assert grant.status == "active"
    assert f"12.50 USD granted to {tenant} at Stripe ({grant.stripe_id})" in page

    local_stripe.fail_next(1, status=400, path=GRANTS, method="POST")
    page = admin_client.post(ADD, _form(tenant), follow=True).content.decode()
    refused = CreditGrant.objects.order_by("pk").last()
    assert refused.status == "failed"
    assert f"Stripe refused grant {refused.pk}" in page


def test_void_asks_for_a_reason_then_voids_at_stripe(
    admin_client, admin_user, local_stripe, tenant, django_capture_on_commit_callbacks
):
    link_customer(tenant)
    _grant(admin_client, tenant, django_capture_on_commit_callbacks)
    grant = CreditGrant.objects.get()
    form = {"action": "void_at_stripe", "_selected_action": [grant.pk]}

    page = admin_client.post(LIST, form)
    assert page.status_code == 200
    assert 'name="void_reason"' in page.content.decode()
    assert CreditGrant.objects.get().status == "active"

    admin_client.post(LIST, {**form, "confirmed": "yes", "void_reason": "granted to the wrong tenant"})
    grant.refresh_from_db()
    assert (grant.status, grant.voided_by, grant.void_reason) == (
        "voided",
        admin_user,
        "granted to the wrong tenant",
    )
    assert local_stripe.get(grant.stripe_id)["voided_at"] is not None


def test_a_grant_is_read_only_after_creation(
    admin_client, local_stripe, tenant, django_capture_on_commit_callbacks
):
    link_customer(tenant)
    _grant(admin_client, tenant, django_capture_on_commit_callbacks)
    grant = CreditGrant.objects.get()
    change = f"{LIST}{grant.pk}/change/"
    assert admin_client.get(change).status_code == 200
    admin_client.post(change, _form(tenant, amount="99999"))
    assert CreditGrant.objects.get().amount_minor == 1250
    assert admin_client.post(f"{LIST}{grant.pk}/delete/", {"post": "yes"}).status_code == 403
    assert CreditGrant.objects.filter(pk=grant.pk).exists()


def test_a_view_only_operator_sees_grants_but_cannot_grant_or_void(
    admin_client, viewer_client, local_stripe, tenant, django_capture_on_commit_callbacks
):
    link_customer(tenant)
    _grant(admin_client, tenant, django_capture_on_commit_callbacks)
    grant = CreditGrant.objects.get()
    local_stripe.clear_requests()

    assert viewer_client.get(LIST).status_code == 200
    assert viewer_client.get(f"{LIST}{grant.pk}/change/").status_code == 200
    assert viewer_client.get(ADD).status_code == 403
    assert viewer_client.post(ADD, _form(tenant)).status_code == 403
    viewer_client.post(
        LIST,
        {"action": "void_at_stripe", "_selected_action": [grant.pk], "confirmed": "yes", "void_reason": "x"},
    )
    assert CreditGrant.objects.get().status == "active"
    assert CreditGrant.objects.count() == 1
    assert local_stripe.requests == []


def test_send_again_completes_a_grant_stripe_did_not_answer_for_once(
    admin_client, local_stripe, tenant, django_capture_on_commit_callbacks
):
    link_customer(tenant)
    local_stripe.fail_next(3, status=503, path=GRANTS, method="POST")
    _grant(admin_client, tenant, django_capture_on_commit_callbacks)
    grant = CreditGrant.objects.get()
    assert grant.status == "pending"
    form = {"action": "send_again", "_selected_action": [grant.pk]}

    assert "Send to Stripe" in admin_client.post(LIST, form).content.decode()
    assert CreditGrant.objects.get().status == "pending"  # asked first
    admin_client.post(LIST, {**form, "confirmed": "yes"})

    grant.refresh_from_db()
    assert grant.status == "active"
    assert [g["id"] for g in local_stripe.objects("billing.credit_grant")] == [grant.stripe_id]
