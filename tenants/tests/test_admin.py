import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client

from tenants.models import Tenant, TenantAPIKey
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client():
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def test_tenant_pages_load_with_search_and_filters(staff_client, tenant, other_tenant):
    TenantFactory(slug="free-one", name="Free One", plan=Tenant.Plan.FREE)
    response = staff_client.get("/admin/tenants/tenant/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "tenant-a" in html
    assert "tenant-b" in html
    assert "free-one" in html

    response = staff_client.get("/admin/tenants/tenant/", {"q": "Tenant B"})
    html = response.content.decode()
    assert "tenant-b" in html
    assert "tenant-a" not in html

    response = staff_client.get("/admin/tenants/tenant/", {"plan__exact": "free"})
    html = response.content.decode()
    assert "free-one" in html
    assert "tenant-a" not in html

    response = staff_client.get("/admin/tenants/tenant/", {"status__exact": "suspended"})
    assert "0 tenants" in response.content.decode()

    assert staff_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").status_code == 200
    assert staff_client.get("/admin/tenants/tenant/add/").status_code == 200
    assert staff_client.get("/admin/tenants/tenantapikey/").status_code == 200


def test_change_page_lists_keys_without_any_secret(staff_client, tenant):
    key = issue_key(tenant, name="production")
    prefix, _, secret = key.partition(".")
    api_key = TenantAPIKey.objects.get(prefix=prefix)
    for url in (
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        "/admin/tenants/tenantapikey/",
        f"/admin/tenants/tenantapikey/{api_key.pk}/change/",
    ):
        html = staff_client.get(url).content.decode()
        assert "production" in html
        assert prefix in html
        assert secret not in html
        assert api_key.hashed_key not in html


def test_create_key_action_asks_for_a_name_then_shows_a_working_key_once(staff_client, tenant):
    changelist = "/admin/tenants/tenant/"
    form = {"action": "create_api_key", "_selected_action": [tenant.pk]}
    confirm = staff_client.post(changelist, form)
    assert confirm.status_code == 200
    assert "Key name" in confirm.content.decode()
    assert TenantAPIKey.objects.count() == 0

    response = staff_client.post(changelist, {**form, "apply": "1", "key_name": "from-admin"}, follow=True)
    html = response.content.decode()
    match = re.search(r"<code>([A-Za-z0-9]{8}\.[A-Za-z0-9]{32})</code>", html)
    assert match, html
    key = match.group(1)
    assert TenantAPIKey.objects.get(tenant=tenant).name == "from-admin"

    api = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert api.get("/api/v1/tenant").json()["slug"] == "tenant-a"
    # The message is gone on the next page: the key was shown once.
    assert key not in staff_client.get(changelist).content.decode()
    assert LogEntry.objects.filter(
        object_id=str(tenant.pk), change_message__contains="Created API key"
    ).exists()


def test_create_key_action_rejects_an_empty_name(staff_client, tenant):
    form = {"action": "create_api_key", "_selected_action": [tenant.pk], "apply": "1", "key_name": " "}
    response = staff_client.post("/admin/tenants/tenant/", form, follow=True)
    assert "must not be empty" in response.content.decode()
    assert TenantAPIKey.objects.count() == 0


def test_revoke_action_stops_the_key(staff_client, tenant):
    key = issue_key(tenant)
    api_key = TenantAPIKey.objects.get(tenant=tenant)
    response = staff_client.post(
        "/admin/tenants/tenantapikey/",
        {"action": "revoke", "_selected_action": [api_key.pk]},
        follow=True,
    )
    assert "Revoked 1 key(s)." in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.revoked
    assert api_key.revoked_at is not None
    assert Client(HTTP_AUTHORIZATION=f"Api-Key {key}").get("/api/v1/tenant").status_code == 401


def test_suspend_and_reactivate_actions_change_access_and_history(staff_client, tenant):
    key = issue_key(tenant)
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
    form = {"_selected_action": [tenant.pk]}

    response = staff_client.post("/admin/tenants/tenant/", {**form, "action": "suspend"}, follow=True)
    assert "Suspended 1 tenant(s)." in response.content.decode()
    assert api.get("/api/v1/tenant").status_code == 403

    response = staff_client.post("/admin/tenants/tenant/", {**form, "action": "reactivate"}, follow=True)
    assert "Reactivated 1 tenant(s)." in response.content.decode()
    assert api.get("/api/v1/tenant").status_code == 200

    history = list(tenant.changes.filter(field="status").values_list("new_value", "actor__username"))
    assert history == [("active", "operator"), ("suspended", "operator")]
    html = staff_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert "plan and status history" in html.lower()


def test_plan_change_in_admin_is_recorded(staff_client, tenant):
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    data = {
        "name": tenant.name,
        "slug": tenant.slug,
        "plan": "free",
        "monthly_free_allowance": "500",
        "stripe_customer": "",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "changes-TOTAL_FORMS": "0",
        "changes-INITIAL_FORMS": "0",
    }
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant.refresh_from_db()
    assert tenant.plan == "free"
    assert str(tenant.monthly_free_allowance) == "500.000000"
    change = tenant.changes.get(field="plan")
    assert (change.old_value, change.new_value, change.actor.username) == ("metered", "free", "operator")


def test_adding_a_tenant_in_admin_records_its_creation(staff_client):
    data = {
        "name": "Added Co",
        "slug": "added-co",
        "plan": "metered",
        "monthly_free_allowance": "0",
        "stripe_customer": "",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "changes-TOTAL_FORMS": "0",
        "changes-INITIAL_FORMS": "0",
    }
    response = staff_client.post("/admin/tenants/tenant/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    tenant = Tenant.objects.get(slug="added-co")
    assert tenant.changes.get().field == "created"


def test_admin_requires_staff(tenant):
    response = Client().get("/admin/tenants/tenant/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
