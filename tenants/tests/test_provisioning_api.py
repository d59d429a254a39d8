"""The provisioning API under /api/v1/tenants: a platform key with `tenants:write` creates, reads,
changes, suspends and reactivates tenants and issues and revokes their keys; every change leaves the
same history row as the admin's, naming the platform key."""

from decimal import Decimal

import pytest

from core.api_scopes import EVENTS_WRITE, TENANTS_WRITE, USAGE_READ
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey, TenantChange
from tenants.services import api_key_revoke, platform_key_issue, tenant_create
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, key_client, slug_of_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def backend():
    """A platform key with tenants:write, and a client calling with it."""
    issued = platform_key_issue(name="backend", scopes=[TENANTS_WRITE])
    client = key_client(issued.secret)
    client.key = issued.api_key
    return client


@pytest.fixture
def acme():
    return tenant_create(name="Acme", external_id="cus_acme", source="test")


def _fields(response) -> dict:
    body = response.json()
    assert body["error"]["code"] == "invalid", body
    return body["error"]["fields"]


def _history(tenant) -> list[tuple]:
    return list(
        TenantChange.objects.filter(tenant=tenant)
        .order_by("id")
        .values_list("field", "old_value", "new_value", "platform_key__name", "actor", "source")
    )


# --- Create -------------------------------------------------------------------------------------


def test_creating_a_tenant_with_a_first_key_answers_both_and_the_key_works(backend):
    response = backend.post(
        "/api/v1/tenants",
        {
            "name": "Globex",
            "external_id": "cus_42",
            "plan": "metered",
            "monthly_free_allowance": "1000.5",
            "api_key": {"name": "production"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    tenant = Tenant.objects.get(external_id="cus_42")
    assert body["id"] == tenant.pk
    assert (body["slug"], body["name"], body["plan"], body["status"]) == (
        "globex",
        "Globex",
        "metered",
        "active",
    )
    assert Decimal(body["monthly_free_allowance"]) == Decimal("1000.5")
    assert body["stripe_customer"] is None
    key = body["api_key"]["key"]
    assert body["api_key"]["prefix"] == key.split(".")[0]
    assert slug_of_key(key) == "globex"
    stored = TenantAPIKey.objects.get(tenant=tenant)
    assert stored.name == "production"
    assert key.split(".")[1] not in stored.hashed_key
    assert _history(tenant) == [
        ("created", "", "metered/active", "backend", None, "api"),
        ("api_key", "", stored.prefix, "backend", None, "api"),
    ]


def test_creating_a_tenant_without_a_key_answers_no_key(backend):
    response = backend.post("/api/v1/tenants", {"name": "Small Shop"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert "api_key" not in body
    assert (body["slug"], body["external_id"], body["plan"]) == ("small-shop", None, "free")
    assert not TenantAPIKey.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "Other", "external_id": "cus_acme"}, "external_id", "already exists"),
        ({"name": "Other", "external_id": "acme"}, "external_id", "another tenant's slug"),
        ({"name": "Acme"}, "slug", "already exists"),
        ({"name": "Other", "slug": "cus_acme"}, "slug", "another tenant's external id"),
        ({"name": "Other", "external_id": " cus"}, "external_id", "start or end with a space"),
        ({"name": "Other", "external_id": "x" * 256}, "external_id", "255"),
        ({"name": "Other", "plan": "gold"}, "plan", "not a valid choice"),
        ({"name": "Other", "monthly_free_allowance": "-1"}, "monthly_free_allowance", "Enter a decimal"),
        ({"name": "Other", "monthly_free_allowance": -1}, "monthly_free_allowance", "greater than or equal"),
        ({"name": "Other", "monthly_free_allowance": "1e3"}, "monthly_free_allowance", "Enter a decimal"),
        ({"name": "Other", "monthly_free_allowance": " 5"}, "monthly_free_allowance", "Enter a decimal"),
        ({"name": "Other", "monthly_free_allowance": True}, "monthly_free_allowance", "valid number"),
        ({"name": "Other", "monthly_free_allowance": "1" * 30}, "monthly_free_allowance", "digits"),
        ({"name": 7}, "name", "Not a valid string"),
        ({"name": "Other", "api_key": {"name": 0}}, "api_key", "Not a valid string"),
        ({"name": ""}, "name", "blank"),
        ({"external_id": "cus_9"}, "name", "required"),
        ({"name": "Other", "free_allowance": "5"}, "free_allowance", "unknown field"),
        ({"name": "!!!"}, "slug", "cannot make a slug"),
    ],
)
def test_a_bad_tenant_is_refused_naming_the_field_and_nothing_is_made(backend, acme, body, field, message):
    response = backend.post("/api/v1/tenants", body, format="json")
    assert response.status_code == 400
    fields = _fields(response)
    assert list(fields) == [field], fields
    assert message in str(fields[field])
    assert Tenant.objects.count() == 1


def test_a_bad_first_key_name_makes_no_tenant(backend):
    response = backend.post(
        "/api/v1/tenants", {"name": "Globex", "api_key": {"name": "n" * 51}}, format="json"
    )
    assert response.status_code == 400
    assert "name" in _fields(response)["api_key"]
    assert not Tenant.objects.exists()
    assert not TenantChange.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(backend):
    response = backend.post("/api/v1/tenants", ["Globex"], format="json")
    assert response.status_code == 400
    assert not Tenant.objects.exists()


# --- Who may call --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/tenants"),
        ("post", "/api/v1/tenants"),
        ("get", "/api/v1/tenants/cus_acme"),
        ("patch", "/api/v1/tenants/cus_acme"),
        ("post", "/api/v1/tenants/cus_acme/suspend"),
        ("post", "/api/v1/tenants/cus_acme/reactivate"),
        ("get", "/api/v1/tenants/cus_acme/keys"),
        ("post", "/api/v1/tenants/cus_acme/keys"),
        ("delete", "/api/v1/tenants/cus_acme/keys/abcdefgh"),
        ("post", "/api/v1/tenants/cus_acme/onboard"),
    ],
)
def test_only_a_platform_key_with_tenants_write_may_call(acme, method, path, client_with_scopes, api_client):
    tenant_key = key_client(issue_key(acme), scheme="Api-Key")
    refused = getattr(tenant_key, method)(path, {}, format="json")
    assert refused.status_code == 403
    assert "platform key with the 'tenants:write' scope" in refused.json()["error"]["message"]

    scoped = getattr(client_with_scopes(EVENTS_WRITE, USAGE_READ), method)(path, {}, format="json")
    assert scoped.status_code == 403
    assert "lacks the 'tenants:write' scope" in scoped.json()["error"]["message"]

    assert getattr(api_client, method)(path, {}, format="json").status_code == 401

    issued = platform_key_issue(name="old", scopes=[TENANTS_WRITE])
    api_key_revoke(api_key=issued.api_key)
    revoked = getattr(key_client(issued.secret), method)(path, {}, format="json")
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]["message"]
    assert _history(acme) == [("created", "", "free/active", None, None, "test")]
    assert not TenantAPIKey.objects.exclude(tenant=acme).exists()
    assert TenantAPIKey.objects.filter(revoked=True).count() == 0


def test_an_unknown_ref_is_a_404_naming_it(backend, acme):
    for method, path in [
        ("get", "/api/v1/tenants/nobody"),
        ("patch", "/api/v1/tenants/nobody"),
        ("post", "/api/v1/tenants/nobody/suspend"),
        ("post", "/api/v1/tenants/nobody/keys"),
        ("get", "/api/v1/tenants/nobody/keys"),
        ("delete", "/api/v1/tenants/nobody/keys/abcdefgh"),
        ("post", "/api/v1/tenants/nobody/onboard"),
    ]:
        response = getattr(backend, method)(path, {}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["message"] == "no tenant with external id or slug 'nobody'"
    assert backend.get("/api/v1/tenants/%00").status_code == 404


# --- Read ----------------------------------------------------------------------------------------


def test_a_tenant_is_read_by_external_id_or_slug(backend, acme):
    by_external = backend.get("/api/v1/tenants/cus_acme")
    by_slug = backend.get("/api/v1/tenants/acme")
    assert by_external.status_code == by_slug.status_code == 200
    assert by_external.json() == by_slug.json()
    assert by_external.json()["external_id"] == "cus_acme"


def test_the_list_pages_by_id_and_filters_by_external_id(backend):
    made = [TenantFactory(slug=f"t{n}", external_id=f"cus_{n}", plan="free") for n in range(5)]
    first = backend.get("/api/v1/tenants", {"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert body["count"] == 5
    assert [row["slug"] for row in body["results"]] == ["t0", "t1"]
    second = backend.get(body["next"])
    assert [row["slug"] for row in second.json()["results"]] == ["t2", "t3"]
    last = backend.get(second.json()["next"]).json()
    assert ([row["slug"] for row in last["results"]], last["next"]) == (["t4"], None)

    found = backend.get("/api/v1/tenants", {"external_id": "cus_3"}).json()
    assert (found["count"], found["results"][0]["id"]) == (1, made[3].pk)
    assert backend.get("/api/v1/tenants", {"external_id": "cus_9"}).json() == {
        "count": 0,
        "next": None,
        "results": [],
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "x"}, "status"),
    ],
)
def test_bad_list_parameters_are_a_400_naming_them(backend, query, field):
    response = backend.get("/api/v1/tenants", query)
    assert response.status_code == 400
    assert list(_fields(response)) == [field]


# --- Change --------------------------------------------------------------------------------------


def test_a_patch_changes_each_field_through_the_services_and_records_each(backend, acme):
    response = backend.patch(
        "/api/v1/tenants/cus_acme",
        {
            "name": "Acme Corp",
            "plan": "metered",
            "monthly_free_allowance": "250",
            "external_id": "cus_acme_2",
            "reason": "annual deal",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["plan"], body["external_id"]) == ("Acme Corp", "metered", "cus_acme_2")
    acme.refresh_from_db()
    assert (acme.name, acme.plan, acme.monthly_free_allowance) == ("Acme Corp", "metered", Decimal(250))
    rows = TenantChange.objects.filter(tenant=acme, source="api").order_by("id")
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [
        ("name", "Acme", "Acme Corp"),
        ("free_allowance", "0", "250"),
        ("external_id", "cus_acme", "cus_acme_2"),
        ("plan", "free", "metered"),
    ]
    assert {(r.platform_key, r.actor, r.reason) for r in rows} == {(backend.key, None, "annual deal")}
    assert backend.get("/api/v1/tenants/cus_acme").status_code == 404
    assert backend.get("/api/v1/tenants/cus_acme_2").status_code == 200


def test_a_patch_that_changes_nothing_records_nothing_and_null_clears_the_external_id(backend, acme):
    same = backend.patch("/api/v1/tenants/acme", {"name": "Acme", "plan": "free"}, format="json")
    assert same.status_code == 200
    assert TenantChange.objects.filter(tenant=acme).count() == 1
    cleared = backend.patch("/api/v1/tenants/acme", {"external_id": None}, format="json")
    assert cleared.json()["external_id"] is None
    assert _history(acme)[-1] == ("external_id", "cus_acme", "", "backend", None, "api")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "   ", "plan": "metered"}, "name"),
        ({"monthly_free_allowance": "-0.5", "plan": "metered"}, "monthly_free_allowance"),
        ({"external_id": "other", "plan": "metered"}, "external_id"),
        ({"external_id": "cus_other", "plan": "metered"}, "external_id"),
        ({"plan": "gold"}, "plan"),
        ({"status": "suspended"}, "status"),
    ],
)
def test_a_bad_patch_is_a_400_naming_the_field_and_changes_nothing(backend, acme, body, field):
    tenant_create(name="Other", external_id="cus_other", source="test")
    response = backend.patch("/api/v1/tenants/cus_acme", body, format="json")
    assert response.status_code == 400
    assert list(_fields(response)) == [field]
    acme.refresh_from_db()
    assert (acme.name, acme.plan, acme.external_id, acme.status) == ("Acme", "free", "cus_acme", "active")
    assert len(_history(acme)) == 1


# --- Suspend, reactivate -------------------------------------------------------------------------


def test_suspend_and_reactivate_are_idempotent_and_stop_and_restart_the_tenants_keys(backend, acme):
    key = issue_key(acme)
    suspended = backend.post("/api/v1/tenants/cus_acme/suspend", {"reason": "unpaid"}, format="json")
    assert suspended.status_code == 200
    assert suspended.json()["changed"] is True
    assert suspended.json()["tenant"]["status"] == "suspended"
    assert key_client(key).get("/api/v1/tenant").status_code == 403
    again = backend.post("/api/v1/tenants/cus_acme/suspend", format="json")
    assert (again.status_code, again.json()["changed"]) == (200, False)

    reactivated = backend.post("/api/v1/tenants/acme/reactivate", format="json")
    assert (reactivated.json()["changed"], reactivated.json()["tenant"]["status"]) == (True, "active")
    assert key_client(key).get("/api/v1/tenant").status_code == 200
    assert backend.post("/api/v1/tenants/acme/reactivate", format="json").json()["changed"] is False
    rows = TenantChange.objects.filter(tenant=acme, field="status").order_by("id")
    assert [(r.new_value, r.platform_key, r.reason) for r in rows] == [
        ("suspended", backend.key, "unpaid"),
        ("active", backend.key, ""),
    ]


# --- Keys ----------------------------------------------------------------------------------------


def test_a_key_issued_through_the_api_works_until_it_is_revoked_through_the_api(backend, acme):
    issued = backend.post("/api/v1/tenants/cus_acme/keys", {"name": "ci"}, format="json")
    assert issued.status_code == 201
    key, prefix = issued.json()["key"], issued.json()["prefix"]
    assert slug_of_key(key) == "acme"

    listed = backend.get("/api/v1/tenants/cus_acme/keys").json()["keys"]
    assert [(row["name"], row["prefix"], row["state"]) for row in listed] == [("ci", prefix, "active")]
    assert key.split(".")[1] not in str(listed)

    assert backend.delete(f"/api/v1/tenants/cus_acme/keys/{prefix}").status_code == 204
    assert key_client(key).get("/api/v1/tenant").status_code == 401
    assert backend.delete(f"/api/v1/tenants/cus_acme/keys/{prefix}").status_code == 204
    assert backend.get("/api/v1/tenants/acme/keys").json()["keys"][0]["state"] == "revoked"
    assert _history(acme)[1:] == [
        ("api_key", "", prefix, "backend", None, "api"),
        ("api_key", prefix, "revoked", "backend", None, "api"),
    ]


def test_a_key_is_named_api_by_default_and_a_bad_name_is_a_400(backend, acme):
    assert backend.post("/api/v1/tenants/acme/keys", format="json").json()["name"] == "api"
    response = backend.post("/api/v1/tenants/acme/keys", {"name": "n" * 51}, format="json")
    assert response.status_code == 400
    assert list(_fields(response)) == ["name"]
    assert TenantAPIKey.objects.count() == 1


def test_another_tenants_key_cannot_be_revoked_through_this_tenants_ref(backend, acme):
    other = tenant_create(name="Other", external_id="cus_other", source="test")
    other_key = issue_key(other)
    prefix = other_key.split(".")[0]
    response = backend.delete(f"/api/v1/tenants/cus_acme/keys/{prefix}")
    assert response.status_code == 404
    assert prefix in response.json()["error"]["message"]
    assert slug_of_key(other_key) == "other"
    assert backend.get("/api/v1/tenants/cus_acme/keys").json() == {"keys": []}


def test_a_platform_keys_prefix_is_no_tenants_key(backend, acme):
    response = backend.delete(f"/api/v1/tenants/cus_acme/keys/{backend.key.prefix}")
    assert response.status_code == 404
    assert not PlatformAPIKey.objects.filter(revoked=True).exists()


def test_a_ref_taken_by_a_concurrent_call_is_a_400_naming_it(backend, acme, monkeypatch):
    # As if another call made the same external id between this call's check and its write.
    tenant_create(name="Other", external_id="cus_other", source="test")
    monkeypatch.setattr("tenants.services._refs_free", lambda **kwargs: None)
    monkeypatch.setattr("tenants.services._validate", lambda row, **kwargs: None)
    created = backend.post("/api/v1/tenants", {"name": "Third", "external_id": "cus_acme"}, format="json")
    assert created.status_code == 400
    assert "just now" in _fields(created)["external_id"][0]
    changed = backend.patch("/api/v1/tenants/acme", {"external_id": "cus_other", "name": "X"}, format="json")
    assert changed.status_code == 400
    assert list(_fields(changed)) == ["external_id"]
    acme.refresh_from_db()
    assert (acme.name, acme.external_id) == ("Acme", "cus_acme")
    assert Tenant.objects.count() == 2
