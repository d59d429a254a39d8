from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from freezegun import freeze_time
from rest_framework.test import APIClient

from tenants.models import Tenant, TenantAPIKey
from tenants.services import api_key_issue, api_key_revoke, tenant_suspend
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db


def _client(key: str | None = None, header: str | None = None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    elif key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_issued_key_is_shown_once_and_only_its_hash_is_stored(tenant):
    issued = api_key_issue(tenant=tenant, name="ci")
    prefix, _, secret = issued.secret.partition(".")
    assert prefix == issued.api_key.prefix
    assert len(secret) >= 32

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {TenantAPIKey._meta.db_table}")  # noqa: S608
        rows = cursor.fetchall()
    dumped = repr(rows)
    assert secret not in dumped
    assert issued.secret not in dumped
    stored = TenantAPIKey.objects.get(pk=issued.api_key.pk)
    assert stored.hashed_key.startswith("sha512$$")
    # Nothing on the model can give the secret back.
    assert secret not in repr(vars(stored))


def test_valid_key_authenticates_as_its_tenant(tenant, tenant_key):
    response = _client(tenant_key).get("/api/v1/tenant")
    assert response.status_code == 200
    body = response.json()
    assert body["slug"] == "tenant-a"
    assert body["plan"] == "metered"
    assert body["api_key"]["prefix"] == tenant_key.split(".")[0]


def test_key_of_tenant_a_never_returns_tenant_b(tenant, other_tenant):
    key_a, key_b = issue_key(tenant), issue_key(other_tenant)
    assert _client(key_a).get("/api/v1/tenant").json()["slug"] == "tenant-a"
    assert _client(key_b).get("/api/v1/tenant").json()["slug"] == "tenant-b"
    # A's prefix with B's secret is neither tenant.
    forged = f"{key_a.split('.')[0]}.{key_b.split('.')[1]}"
    assert _client(forged).get("/api/v1/tenant").status_code == 401


def _assert_json_error(response, status: int, code: str, message_part: str):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert message_part in error["message"]


def test_missing_key_gets_401_with_the_scheme_to_use(db):
    response = _client().get("/api/v1/tenant")
    _assert_json_error(response, 401, "not_authenticated", "credentials were not provided")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_wrong_secret_gets_401(tenant_key):
    prefix = tenant_key.split(".")[0]
    response = _client(f"{prefix}.{'x' * 32}").get("/api/v1/tenant")
    _assert_json_error(response, 401, "authentication_failed", "Invalid API key")


def test_unknown_prefix_gets_401(db):
    response = _client("nosuchpf.abcdefabcdefabcdefabcdefabcdefab").get("/api/v1/tenant")
    _assert_json_error(response, 401, "authentication_failed", "Invalid API key")


@pytest.mark.parametrize(
    "header",
    ["Api-Key", "Api-Key ", "Api-Key nodot", "Api-Key .secret", "Api-Key prefix.", "Api-Key a.b c"],
)
def test_malformed_key_gets_401(db, header):
    response = _client(header=header).get("/api/v1/tenant")
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"authentication_failed", "not_authenticated"}


def test_bearer_is_accepted_as_well_as_api_key(tenant_key):
    for scheme in ("Bearer", "bearer", "Api-Key"):
        response = _client(header=f"{scheme} {tenant_key}").get("/api/v1/tenant")
        assert response.status_code == 200, scheme
        assert response.json()["slug"] == "tenant-a"


def test_other_scheme_gets_401(tenant_key):
    response = _client(header=f"Token {tenant_key}").get("/api/v1/tenant")
    _assert_json_error(response, 401, "not_authenticated", "credentials were not provided")


def test_revoked_key_gets_401(tenant):
    issued = api_key_issue(tenant=tenant, name="old")
    assert api_key_revoke(api_key=issued.api_key) is True
    assert api_key_revoke(api_key=issued.api_key) is False  # once only
    response = _client(issued.secret).get("/api/v1/tenant")
    _assert_json_error(response, 401, "authentication_failed", "revoked")
    assert TenantAPIKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


def test_expired_key_gets_401(tenant):
    issued = api_key_issue(tenant=tenant, name="short-lived")
    TenantAPIKey.objects.filter(pk=issued.api_key.pk).update(
        expiry_date=timezone.now() - timedelta(minutes=1)
    )
    _assert_json_error(_client(issued.secret).get("/api/v1/tenant"), 401, "authentication_failed", "expired")


def test_suspended_tenants_key_gets_403(tenant, tenant_key):
    tenant_suspend(tenant=tenant, source="test")
    response = _client(tenant_key).get("/api/v1/tenant")
    _assert_json_error(response, 403, "permission_denied", "suspended")


def test_last_used_is_stamped_at_most_once_a_minute(tenant, tenant_key):
    client = _client(tenant_key)
    with freeze_time("2026-11-01T10:00:00Z"):
        client.get("/api/v1/tenant")
    key = TenantAPIKey.objects.get(tenant=tenant)
    assert key.last_used_at.isoformat() == "2026-11-01T10:00:00+00:00"
    with freeze_time("2026-11-01T10:00:30Z"):
        client.get("/api/v1/tenant")
    key.refresh_from_db()
    assert key.last_used_at.isoformat() == "2026-11-01T10:00:00+00:00"
    with freeze_time("2026-11-01T10:01:30Z"):
        client.get("/api/v1/tenant")
    key.refresh_from_db()
    assert key.last_used_at.isoformat() == "2026-11-01T10:01:30+00:00"


def test_tenant_endpoint_refuses_writes(tenant_client):
    response = tenant_client.post("/api/v1/tenant", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_suspension_is_recorded_in_history(tenant):
    assert tenant_suspend(tenant=tenant, source="test", reason="unpaid") is True
    assert tenant_suspend(tenant=tenant, source="test") is False
    change = tenant.changes.get(field="status")
    assert (change.old_value, change.new_value, change.reason) == ("active", "suspended", "unpaid")
    assert Tenant.objects.get(pk=tenant.pk).status == "suspended"


def test_a_key_in_use_stops_at_once_when_revoked_or_its_tenant_suspended(tenant):
    first, second = api_key_issue(tenant=tenant, name="one"), api_key_issue(tenant=tenant, name="two")
    assert _client(first.secret).get("/api/v1/tenant").status_code == 200  # now cached
    api_key_revoke(api_key=first.api_key)
    assert _client(first.secret).get("/api/v1/tenant").status_code == 401
    assert _client(second.secret).get("/api/v1/tenant").status_code == 200
    tenant_suspend(tenant=tenant, source="test")
    assert _client(second.secret).get("/api/v1/tenant").status_code == 403


def test_a_change_made_elsewhere_is_seen_once_the_cache_expires(tenant, tenant_key, settings):
    client = _client(tenant_key)
    with freeze_time("2026-11-01T10:00:00Z") as clock:
        assert client.get("/api/v1/tenant").status_code == 200
        # Another process revokes the key: this process does not hear of it...
        TenantAPIKey.objects.filter(tenant=tenant).update(revoked=True)
        assert client.get("/api/v1/tenant").status_code == 200
        # ...until its memory of the key is older than API_KEY_CACHE_SECONDS.
        clock.tick(settings.API_KEY_CACHE_SECONDS + 0.1)
        assert client.get("/api/v1/tenant").status_code == 401
