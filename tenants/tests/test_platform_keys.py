"""Platform keys (the SaaS's own backend), Bearer auth, external ids and how a key names a tenant."""

import pytest
from django.db import connection
from rest_framework import exceptions
from rest_framework.test import APIRequestFactory

from core.api_scopes import (
    EVENTS_WRITE,
    TENANTS_WRITE,
    USAGE_READ,
    platform_scope,
    tenant_or_platform_scope,
)
from tenants.authentication import ApiKeyAuthentication, request_named_tenant
from tenants.models import PlatformAPIKey, TenantChange
from tenants.selectors import tenant_by_api_ref, tenants_by_api_refs
from tenants.services import (
    TenantError,
    api_key_revoke,
    platform_key_issue,
    tenant_create,
    tenant_suspend,
)
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key, key_client

pytestmark = pytest.mark.django_db


def _request_as(key: str):
    """A DRF request authenticated by `key`, as a view would see it."""
    from rest_framework.request import Request

    django_request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {key}")
    request = Request(django_request, authenticators=[ApiKeyAuthentication()])
    request.user  # noqa: B018 (authenticates)
    return request


def test_a_platform_key_is_shown_once_stored_hashed_and_says_what_it_is():
    issued = platform_key_issue(name="backend", scopes=[EVENTS_WRITE, EVENTS_WRITE, USAGE_READ])
    prefix, _, secret = issued.secret.partition(".")
    assert prefix.startswith("plat_")
    assert prefix == issued.api_key.prefix
    assert issued.api_key.scopes == [EVENTS_WRITE, USAGE_READ]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {PlatformAPIKey._meta.db_table}")  # noqa: S608
        dumped = repr(cursor.fetchall())
    assert secret not in dumped
    assert PlatformAPIKey.objects.get().hashed_key.startswith("sha512$$")


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ([], "at least one scope"),
        (["events:write", "tenants:delete"], "unknown scope 'tenants:delete'"),
    ],
)
def test_a_platform_key_needs_known_scopes(scopes, message):
    with pytest.raises(TenantError, match=message):
        platform_key_issue(name="backend", scopes=scopes)
    assert not PlatformAPIKey.objects.exists()


def test_a_platform_key_is_refused_where_only_a_tenant_key_acts(tenant):
    response = key_client(issue_platform_key()).get("/api/v1/tenant")
    assert response.status_code == 403
    assert "tenant's own API key" in response.json()["error"]["message"]


def test_a_revoked_platform_key_gets_401():
    issued = platform_key_issue(name="backend", scopes=[EVENTS_WRITE])
    api_key_revoke(api_key=issued.api_key)
    response = key_client(issued.secret, scheme="Api-Key").get("/api/v1/tenant")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_a_tenant_prefix_with_a_platform_secret_is_neither(tenant):
    tenant_key, platform = issue_key(tenant), issue_platform_key()
    forged = f"{platform.split('.')[0]}.{tenant_key.split('.')[1]}"
    assert key_client(forged).get("/api/v1/tenant").status_code == 401


def test_scope_permissions_read_the_principal(tenant):
    events_only = _request_as(issue_platform_key(EVENTS_WRITE))
    tenant_call = _request_as(issue_key(tenant))
    assert platform_scope(EVENTS_WRITE)().has_permission(events_only, None)
    refused = platform_scope(TENANTS_WRITE)()
    assert not refused.has_permission(events_only, None)
    assert "lacks the 'tenants:write' scope" in refused.message
    platform_only = platform_scope(EVENTS_WRITE)()
    assert not platform_only.has_permission(tenant_call, None)
    assert "platform key" in platform_only.message
    assert tenant_or_platform_scope(USAGE_READ)().has_permission(tenant_call, None)
    with pytest.raises(ValueError, match="unknown scope"):
        platform_scope("admin:all")


def test_a_platform_key_names_a_tenant_by_external_id_first_then_slug():
    by_slug = TenantFactory(slug="acme")
    by_external = TenantFactory(slug="globex", external_id="cus_42")
    request = _request_as(issue_platform_key())
    assert request_named_tenant(request, "acme") == by_slug
    assert request_named_tenant(request, "cus_42") == by_external
    assert request_named_tenant(request, "globex") == by_external
    with pytest.raises(exceptions.NotFound, match="no tenant with external id or slug 'nobody'"):
        request_named_tenant(request, "nobody")
    with pytest.raises(exceptions.ValidationError, match="name the tenant"):
        request_named_tenant(request, None)
    assert tenants_by_api_refs(refs=["acme", "cus_42", "x\x00", "\ud800", 7]) == {
        "acme": by_slug,
        "cus_42": by_external,
    }


def test_a_suspended_tenant_is_refused_when_named_unless_only_read(tenant):
    tenant_suspend(tenant=tenant)
    request = _request_as(issue_platform_key())
    with pytest.raises(exceptions.PermissionDenied, match="suspended"):
        request_named_tenant(request, "tenant-a")
    assert request_named_tenant(request, "tenant-a", active=False) == tenant


def test_a_tenant_key_acts_only_for_its_own_tenant(tenant, other_tenant):
    tenant.external_id = "cus_a"
    tenant.save()
    request = _request_as(issue_key(tenant))
    assert request_named_tenant(request, None) == tenant
    assert request_named_tenant(request, "tenant-a") == tenant
    assert request_named_tenant(request, "cus_a") == tenant
    with pytest.raises(exceptions.PermissionDenied, match="only for its own tenant"):
        request_named_tenant(request, "tenant-b")


def test_an_external_id_is_unique_and_never_another_tenants_slug():
    tenant_create(name="Acme", external_id="cus_1")
    with pytest.raises(TenantError, match="external id 'cus_1' already exists"):
        tenant_create(name="Other", external_id="cus_1")
    with pytest.raises(TenantError, match="external id 'acme' is another tenant's slug"):
        tenant_create(name="Other", external_id="acme")
    TenantFactory(slug="x", external_id="cus-1")
    with pytest.raises(TenantError, match="slug 'cus-1' is another tenant's external id"):
        tenant_create(name="cus-1")
    for bad, message in [
        (" cus", "blank or start or end"),
        ("", "blank"),
        ("a\nb", "printable"),
        ("x" * 256, "255"),
    ]:
        with pytest.raises(TenantError, match=message):
            tenant_create(name="Bad", external_id=bad)


def test_a_change_made_with_a_platform_key_names_the_key_in_the_history():
    issued = platform_key_issue(name="backend", scopes=[TENANTS_WRITE])
    tenant = tenant_create(name="Acme", external_id="cus_1", actor=issued.api_key, source="api")
    tenant_suspend(tenant=tenant, actor=issued.api_key, source="api")
    rows = list(TenantChange.objects.filter(tenant=tenant).order_by("id"))
    assert [(row.field, row.platform_key, row.actor, row.source) for row in rows] == [
        ("created", issued.api_key, None, "api"),
        ("status", issued.api_key, None, "api"),
    ]
    assert tenant_by_api_ref(ref="cus_1") == tenant
