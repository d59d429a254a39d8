"""Platform keys in admin (made with scopes, shown once, revoked by key managers only) and the tenant
admin's external id, whose edits, like the API's, leave history rows."""

import importlib
import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from core.api_scopes import EVENTS_WRITE, TENANTS_WRITE
from tenants.models import PlatformAPIKey, TenantChange
from tenants.services import platform_key_issue, tenant_create
from tenants.tests.factories import TenantFactory
from tenants.tests.support import key_client

pytestmark = pytest.mark.django_db

ROLES = importlib.import_module("console.migrations.0002_operator_roles")
PLATFORM_ROLES = importlib.import_module("console.migrations.0004_platform_key_roles")
ADD = "/admin/tenants/platformapikey/add/"
CHANGELIST = "/admin/tenants/platformapikey/"
KEY = re.compile(r'<code data-testid="new-key"[^>]*>(plat_[A-Za-z0-9]{8}\.[A-Za-z0-9]{32})</code>')


def _login(django_user_model, group_name: str | None, username: str) -> Client:
    from django.apps import apps

    ROLES.create_groups(apps, None)
    PLATFORM_ROLES.grant(apps, None)
    if group_name is None:
        user = django_user_model.objects.create_superuser(username, f"{username}@example.com", "pw")
    else:
        user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def superuser_client(django_user_model):
    return _login(django_user_model, None, "root")


@pytest.fixture
def operator_client(django_user_model):
    return _login(django_user_model, ROLES.OPERATOR, "operator")


@pytest.fixture
def viewer_client(django_user_model):
    return _login(django_user_model, ROLES.VIEWER, "viewer")


def test_adding_a_platform_key_shows_it_once_and_stores_only_its_hash(operator_client):
    response = operator_client.post(ADD, {"name": "backend", "scopes": [TENANTS_WRITE, EVENTS_WRITE]})
    assert response.status_code == 200, response.content.decode()[:2000]
    assert "no-store" in response["Cache-Control"]
    secret = KEY.search(response.content.decode()).group(1)
    api_key = PlatformAPIKey.objects.get()
    assert (api_key.name, api_key.prefix, api_key.created_by) == (
        "backend",
        secret.split(".")[0],
        operator_client.user,
    )
    assert sorted(api_key.scopes) == sorted([TENANTS_WRITE, EVENTS_WRITE])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {PlatformAPIKey._meta.db_table}")  # noqa: S608
        assert secret.split(".")[1] not in repr(cursor.fetchall())
    assert key_client(secret).get("/api/v1/tenants").status_code == 200

    for url in (CHANGELIST, f"{CHANGELIST}{api_key.pk}/change/"):
        html = operator_client.get(url).content.decode()
        assert api_key.prefix in html
        assert "tenants:write" in html
        assert secret.split(".")[1] not in html
        assert api_key.hashed_key not in html


def test_a_platform_key_needs_a_scope_and_a_name(superuser_client):
    page = superuser_client.get(ADD).content.decode()
    assert 'type="checkbox" name="scopes" value="events:write"' in page
    response = superuser_client.post(ADD, {"name": "backend"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert superuser_client.post(ADD, {"name": "", "scopes": [EVENTS_WRITE]}).status_code == 200
    assert not PlatformAPIKey.objects.exists()


def test_the_revoke_action_stops_the_key(operator_client):
    issued = platform_key_issue(name="backend", scopes=[TENANTS_WRITE])
    response = operator_client.post(CHANGELIST, {"action": "revoke", "_selected_action": [issued.api_key.pk]})
    assert response.status_code == 302
    assert key_client(issued.secret).get("/api/v1/tenants").status_code == 401
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked


def test_a_viewer_sees_platform_keys_but_cannot_add_or_revoke_them(viewer_client):
    issued = platform_key_issue(name="backend", scopes=[TENANTS_WRITE])
    listed = viewer_client.get(CHANGELIST)
    assert listed.status_code == 200
    assert issued.api_key.prefix in listed.content.decode()
    assert 'value="revoke"' not in listed.content.decode()
    assert viewer_client.get(ADD).status_code == 403
    assert viewer_client.post(ADD, {"name": "mine", "scopes": [TENANTS_WRITE]}).status_code == 403
    viewer_client.post(CHANGELIST, {"action": "revoke", "_selected_action": [issued.api_key.pk]})
    assert key_client(issued.secret).get("/api/v1/tenants").status_code == 200
    assert PlatformAPIKey.objects.filter(revoked=False).count() == 1


# --- The tenant admin's external id ---------------------------------------------------------------


def _tenant_form(tenant, **changes) -> dict:
    return {
        "name": tenant.name,
        "slug": tenant.slug,
        "external_id": tenant.external_id or "",
        "plan": tenant.plan,
        "monthly_free_allowance": "0",
        "stripe_customer": "",
        **changes,
    }


def test_the_tenant_admin_edits_the_external_id_with_a_history_row(superuser_client):
    tenant = tenant_create(name="Acme", source="test")
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    response = superuser_client.post(url, _tenant_form(tenant, external_id="cus_1", name="Acme Corp"))
    assert response.status_code == 302, response.content.decode()[:3000]
    tenant.refresh_from_db()
    assert (tenant.external_id, tenant.name) == ("cus_1", "Acme Corp")
    rows = TenantChange.objects.filter(tenant=tenant, source="admin").order_by("id")
    assert [(r.field, r.old_value, r.new_value, r.actor) for r in rows] == [
        ("name", "Acme", "Acme Corp", superuser_client.user),
        ("external_id", "", "cus_1", superuser_client.user),
    ]
    found = superuser_client.get("/admin/tenants/tenant/", {"q": "cus_1"}).content.decode()
    assert "acme" in found
    page = superuser_client.get(url).content.decode()
    assert re.search(r'data-testid="tenant-external-id"><code>cus_1</code>', page)


def test_the_tenant_admin_refuses_an_external_id_naming_another_tenant(superuser_client):
    TenantFactory(slug="other", external_id="cus_other")
    tenant = tenant_create(name="Acme", source="test")
    url = f"/admin/tenants/tenant/{tenant.pk}/change/"
    for taken in ("cus_other", "other"):
        response = superuser_client.post(url, _tenant_form(tenant, external_id=taken))
        assert response.status_code == 200
        assert "errorlist" in response.content.decode()
    tenant.refresh_from_db()
    assert tenant.external_id is None
    assert not TenantChange.objects.filter(tenant=tenant, source="admin").exists()


def test_the_tenant_page_names_the_platform_key_behind_a_change(superuser_client):
    issued = platform_key_issue(name="backend", scopes=[TENANTS_WRITE])
    tenant = tenant_create(name="Acme", external_id="cus_1", actor=issued.api_key, source="api")
    page = superuser_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    cause = re.search(r'data-testid="history-cause-link">([^<]*)</a>', page)
    assert cause
    assert cause.group(1) == f"platform key backend ({issued.api_key.prefix}…, via api)"
    assert f"/admin/tenants/platformapikey/{issued.api_key.pk}/change/" in page
