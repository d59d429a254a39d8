"""Helpers for tests of any app: API keys (tenant and platform) and clients, a command's output,
whom a key authenticates."""

from io import StringIO

from django.core.management import call_command
from rest_framework.test import APIClient

from core.api_scopes import SCOPES
from tenants.models import Tenant
from tenants.services import api_key_issue, platform_key_issue


def issue_key(tenant: Tenant, name: str = "test") -> str:
    return api_key_issue(tenant=tenant, name=name).secret


def issue_platform_key(*scopes: str, name: str = "backend") -> str:
    """A platform key with these scopes (all of them when none are named)."""
    return platform_key_issue(name=name, scopes=scopes or list(SCOPES)).secret


def key_client(key: str, scheme: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    return client


def run_command(*args) -> list[str]:
    """Run a management command; return its output lines."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def slug_of_key(key: str) -> str:
    """Call the API with `key`; return the slug of the tenant it authenticates (asserts 200)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.get("/api/v1/tenant")
    assert response.status_code == 200, response.content
    return response.json()["slug"]
