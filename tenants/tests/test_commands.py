import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.api_scopes import SCOPES
from tenants.models import PlatformAPIKey, Tenant, TenantAPIKey, TenantChange
from tenants.tests.support import key_client, run_command, slug_of_key

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_create_tenant_prints_its_id_and_a_working_key_last():
    lines = run_command("create_tenant", "Umbrella Corp", "--plan", "metered")
    tenant = Tenant.objects.get(slug="umbrella-corp")
    assert f"tenant id: {tenant.pk}" in lines[0]
    assert tenant.plan == "metered"
    assert slug_of_key(lines[-1]) == "umbrella-corp"
    assert tenant.changes.filter(field=TenantChange.Field.CREATED).count() == 1


def test_create_tenant_defaults_to_the_free_plan():
    run_command("create_tenant", "Small Shop")
    assert Tenant.objects.get(slug="small-shop").plan == "free"


def test_create_api_key_adds_a_second_working_key(tenant):
    run_command("create_tenant", "Keyed")
    lines = run_command("create_api_key", "keyed", "--name", "second")
    assert slug_of_key(lines[-1]) == "keyed"
    assert TenantAPIKey.objects.filter(tenant__slug="keyed").count() == 2
    by_id = run_command("create_api_key", str(Tenant.objects.get(slug="keyed").pk))
    assert slug_of_key(by_id[-1]) == "keyed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create_tenant", "Dup"], "already exists"),
        (["create_tenant", "   "], "must not be empty"),
        (["create_tenant", "!!!"], "cannot make a slug"),
        (["create_tenant", "X", "--free-allowance", "-1"], "--free-allowance: must be at least 0"),
        (["create_tenant", "X", "--free-allowance", "lots"], "--free-allowance: must be a decimal number"),
        (["create_api_key", "nobody"], "no tenant with slug, external id or id 'nobody'"),
        (["create_api_key", "dup", "--name", "n" * 51], "at most 50"),
    ],
)
def test_bad_arguments_give_one_clear_error_and_write_nothing(args, message):
    run_command("create_tenant", "Dup")
    tenants, keys = Tenant.objects.count(), TenantAPIKey.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command(*args, stdout=StringIO())
    assert (Tenant.objects.count(), TenantAPIKey.objects.count()) == (tenants, keys)


def test_bad_choice_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "X", "--plan", "gold"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "manage.py create_tenant: error: argument --plan: invalid choice: 'gold' "
        "(choose from 'free', 'metered')"
    ]


def test_create_platform_key_prints_its_scopes_and_a_working_key_last():
    lines = run_command("create_platform_key", "backend", "--scopes", "tenants:write,events:write")
    api_key = PlatformAPIKey.objects.get()
    assert lines[0] == f"platform key id: {api_key.pk} (backend); key prefix {api_key.prefix}"
    assert lines[1] == "scopes: tenants:write, events:write"
    assert lines[-1].startswith(f"{api_key.prefix}.")
    assert key_client(lines[-1]).get("/api/v1/tenants").status_code == 200


def test_create_platform_key_defaults_to_sending_and_reading_usage_only():
    lines = run_command("create_platform_key", "ingest")
    assert lines[1] == "scopes: events:write, usage:read"
    assert key_client(lines[-1]).get("/api/v1/tenants").status_code == 403
    run_command("create_platform_key", "everything", "--scopes", "all")
    assert PlatformAPIKey.objects.get(name="everything").scopes == list(SCOPES)


def test_create_tenant_sets_and_shows_the_external_id():
    lines = run_command("create_tenant", "Globex", "--external-id", "cus_42")
    assert "external id cus_42" in lines[0]
    assert Tenant.objects.get(slug="globex").external_id == "cus_42"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create_platform_key", "backend", "--scopes", "tenants:delete"], "unknown scope 'tenants:delete'"),
        (["create_platform_key", "backend", "--scopes", ","], "at least one scope"),
        (["create_platform_key", "  "], "must not be empty"),
        (["create_tenant", "Other", "--external-id", "cus_1"], "external id 'cus_1' already exists"),
        (["create_tenant", "Other", "--external-id", "dup"], "external id 'dup' is another tenant's slug"),
        (["create_tenant", "Other", "--external-id", " x"], "must not be blank or start or end with a space"),
    ],
)
def test_bad_platform_key_or_external_id_arguments_are_one_line_and_write_nothing(args, message):
    run_command("create_tenant", "Dup", "--external-id", "cus_1")
    counts = (Tenant.objects.count(), PlatformAPIKey.objects.count(), TenantAPIKey.objects.count())
    with pytest.raises(CommandError, match=message):
        call_command(*args, stdout=StringIO())
    assert (Tenant.objects.count(), PlatformAPIKey.objects.count(), TenantAPIKey.objects.count()) == counts
