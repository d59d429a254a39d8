from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from metering.models import HourlyAggregate, Meter, Price, UsageEvent
from tenants.models import Tenant, TenantAPIKey, TenantChange
from tenants.tests.factories import run_command, slug_of_key

pytestmark = pytest.mark.django_db


def _snapshot():
    return (
        sorted(Tenant.objects.values_list("slug", "plan", "status", "monthly_free_allowance")),
        sorted(TenantAPIKey.objects.values_list("tenant__slug", "prefix", "hashed_key")),
        list(get_user_model().objects.values_list("username", "password", "is_superuser")),
        TenantChange.objects.count(),
        sorted(Meter.objects.values_list("code", "aggregation")),
        Price.objects.count(),
        UsageEvent.objects.count(),
        sorted(
            HourlyAggregate.objects.values_list("tenant__slug", "meter__code", "hour", "value", "revision")
        ),
    )


def test_seed_demo_twice_leaves_the_same_rows(monkeypatch, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "demo-password-for-tests")
    first = run_command("seed_demo")
    assert first[0] == "admin login: admin / demo-password-for-tests (created)"
    keys = [line.rsplit(" ", 1)[-1] for line in first if "new API key" in line]
    assert len(keys) == 3
    assert {slug_of_key(key) for key in keys} == {"acme", "globex", "initech"}
    assert any(line.startswith("demo usage: ") for line in first)
    before = _snapshot()
    assert before[-2] > 1000  # a week of events
    assert {code for code, _ in before[-4]} == {"api_calls", "storage_gb", "active_users"}

    second = run_command("seed_demo")
    assert second[0] == "admin login: admin / demo-password-for-tests"
    assert not any("new API key" in line for line in second)
    assert _snapshot() == before


def test_seed_demo_remembers_a_generated_password(monkeypatch, settings, tmp_path):
    settings.BASE_DIR = tmp_path
    settings.DEBUG = True
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    first = run_command("seed_demo")[0]
    password = first.split(" / ")[1].removesuffix(" (created)")
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert run_command("seed_demo")[0] == f"admin login: admin / {password}"


def test_seed_demo_refuses_production(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=0"):
        call_command("seed_demo", stdout=StringIO())
    assert Tenant.objects.count() == 0
