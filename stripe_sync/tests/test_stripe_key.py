"""A malformed STRIPE_API_KEY (a space, a line break, a non-ASCII letter) is one message naming the
variable, from the command, the admin action and an operator job alike; a well-formed key Stripe
refuses is one line too."""

import io

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from console.models import OperatorJob
from console.operator_jobs import operator_job_queue, operator_job_run
from stripe_sync.tests.onboarding_support import meter_with_price
from stripe_sync.tests.support import link_customer
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

MALFORMED = [
    "not a key",
    "sk_test_abcdefgh\nInjected: header",
    "sk_test_ключ12345678",
    "sk_test_abc\x00defgh",
]
SAID = "STRIPE_API_KEY is malformed"


@pytest.fixture
def acme(db):
    return TenantFactory(slug="acme")


@pytest.mark.parametrize("key", MALFORMED)
def test_onboard_tenant_with_a_malformed_stripe_key_is_one_line_naming_stripe_api_key(
    local_stripe, settings, acme, key
):
    settings.STRIPE_API_KEY = key
    meter_with_price()
    with pytest.raises(CommandError) as raised:
        call_command("onboard_tenant", "acme", stdout=io.StringIO())
    message = str(raised.value)
    assert message.startswith(SAID)
    assert "\n" not in message
    assert key not in message
    assert local_stripe.objects("customer") == []
    acme.refresh_from_db()
    assert acme.stripe_customer_id is None


def test_onboard_tenant_with_a_key_stripe_refuses_is_one_line_naming_stripe_api_key(
    local_stripe, settings, acme
):
    settings.STRIPE_API_KEY = "rk_live_WellFormedButNotThisServersKey0001"  # the server takes test keys only
    meter_with_price()
    with pytest.raises(CommandError) as raised:
        call_command("onboard_tenant", "acme", stdout=io.StringIO())
    assert str(raised.value).startswith(
        "Stripe refused STRIPE_API_KEY: Stripe: Invalid API Key provided: rk_live_"
    )
    assert "\n" not in str(raised.value)
    assert "WellFormedButNotThisServersKey" not in str(raised.value)


@pytest.mark.parametrize("key", MALFORMED)
def test_the_onboard_admin_action_with_a_malformed_key_shows_an_error_message(
    local_stripe, settings, admin_client, acme, key
):
    settings.STRIPE_API_KEY = key
    form = {"action": "onboard_to_stripe", "_selected_action": [acme.pk], "apply": "1"}
    response = admin_client.post("/admin/tenants/tenant/", form, follow=True)
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1
    assert shown[0].startswith(f"acme: {SAID}")
    assert not LogEntry.objects.exists()


def test_a_resync_job_with_a_malformed_key_fails_with_the_reason(local_stripe, settings, acme):
    link_customer(acme)
    settings.STRIPE_API_KEY = "not a key"
    admin = get_user_model().objects.create_superuser("op", "op@example.com", "pw")
    job = operator_job_queue(kind=OperatorJob.Kind.STRIPE_RESYNC, tenant=acme, requested_by=admin)
    operator_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == OperatorJob.Status.FAILED
    assert job.error.startswith(SAID)
