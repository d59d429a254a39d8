"""Helpers for tests of any app: an API key for a tenant, a command's output, whom a key authenticates."""

from io import StringIO

from django.core.management import call_command
from rest_framework.test import APIClient

from tenants.models import Tenant
from tenants.services import api_key_issue


def issue_key(tenant: Tenant, name: str = "test") -> str:
    return api_key_issue(tenant=tenant, name=name).secret


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
