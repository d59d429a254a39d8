"""Every management command of the platform ends a bad run with one error line and a non-zero exit.

Commands are run as manage.py runs them (`run_from_argv`, in this process so that they see the test
database): argparse's errors exit 2, the command's own CommandError exits 1, and anything else
escapes as an exception, which fails the test (it is the traceback an operator would see).
"""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from core.commands import BaseCommand
from metering.models import Meter
from metering.tests.factories import MeterFactory
from tenants.models import Tenant, TenantAPIKey
from tenants.tests.factories import TenantFactory

ROOT = Path(__file__).resolve().parents[2]
PROJECT_APPS = {
    "core",
    "console",
    "outbound",
    "tenants",
    "metering",
    "apigateway",
    "stripe_sync",
    "costwatch",
}
HUGE = "9" * 5000

pytestmark = pytest.mark.django_db


def project_commands() -> dict[str, str]:
    return {name: app for name, app in get_commands().items() if app in PROJECT_APPS}


# Per command: arguments an operator may get wrong, a garbage value for each typed option among them.
# "{tenant}" is a tenant that exists, "{meter}" a meter that exists, "{files}" a folder of bad files.
BAD_ARGUMENTS: dict[str, list[list[str]]] = {
    "aggregate_usage": [
        ["--full", "--since", "notadate"],
        ["--full", "--since", "9999-12-31T23:59:59-14:00"],
        ["--full", "--since", "0001-01-01"],
        ["--full", "--since", HUGE],
        ["--batch-size", "0"],
        ["--batch-size", "99999999999999999999999"],
        ["--batch-size", "x"],
        ["--full", "--tenant", "nobody"],
        ["--full", "--tenant", "²"],
        ["--since", "2026-11-01"],
    ],
    "sync_usage_plans": [
        [],  # no usage plan configured
        ["--tenant", "nobody"],
        ["--tenant", "{tenant}"],  # no API Gateway key id
    ],
    "import_apigateway_usage": [
        [],  # no usage plan configured
        ["--days", "0"],
        ["--days", "91"],
        ["--days", "x"],
        ["--days", HUGE],
    ],
    "prune_usage_events": [
        ["--older-than-days", "99999999999"],
        ["--older-than-days", "-1"],
        ["--older-than-days", "x"],
        ["--older-than-days", "10"],
    ],
    "import_access_log": [
        ["/nonexistent/logs", "--meter", "{meter}"],
        ["/nonexistent/logs", "--meter", "nope"],
        ["/nonexistent/logs", "--meter", "{meter}", "--tenant-by", "bogus"],
        ["/nonexistent/logs"],
        ["s3://", "--meter", "{meter}"],
    ],
    "consume_usage_queue": [
        ["https://sqs.eu-west-1.amazonaws.com/123456789012/usage"],
        ["https://sqs.eu-west-1.amazonaws.com/123456789012/usage", "--meter", "nope"],
        ["not a queue url", "--meter", "{meter}"],
        ["https://sqs.eu-west-1.amazonaws.com/123456789012/usage", "--meter", "{meter}", "--wait", "21"],
        [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/usage",
            "--meter",
            "{meter}",
            "--max-messages",
            "0",
        ],
        ["https://sqs.eu-west-1.amazonaws.com/1/usage", "--meter", "{meter}", "--visibility-timeout", "x"],
    ],
    "create_meter": [
        ["m2", "--aggregation", "bogus"],
        ["m" * 200, "--aggregation", "count"],
        ["m2", "--aggregation", "count", "--filter", "no-equals-sign"],
        ["m2", "--aggregation", "unique_count"],
        ["{meter}", "--aggregation", "count"],
        ["m2", "--aggregation", "count", "--name", "bad\x00name"],
    ],
    "create_usage_threshold": [
        ["nobody", "{meter}", "--units", "5"],
        ["{tenant}", "nope", "--units", "5"],
        ["{tenant}", "{meter}"],
        ["{tenant}", "{meter}", "--units", "5", "--percent", "5"],
        ["{tenant}", "{meter}", "--units", "0"],
        ["{tenant}", "{meter}", "--units", "1e400"],
        ["{tenant}", "{meter}", "--units", "NaN"],
        ["{tenant}", "{meter}", "--percent", "-1"],
        ["{tenant}", "{meter}", "--percent", HUGE],
        ["{tenant}", "{meter}", "--units", "0.0000000000001"],
    ],
    "set_plan_allowance": [
        ["gold", "{meter}", "--included", "5"],
        ["free", "nope", "--included", "5"],
        ["free", "{meter}"],
        ["free", "{meter}", "--included", "-1"],
        ["free", "{meter}", "--included", HUGE],
        ["free", "{meter}", "--included", "NaN"],
        ["free", "{meter}", "--included", "10", "--limit", "5"],
        ["free", "{meter}", "--included", "1", "--at-limit", "refuse"],
        ["free", "{meter}", "--included", "1", "--limit", "0"],
        ["free", "{meter}", "--included", "1", "--limit", "2", "--at-limit", "sometimes"],
    ],
    "send_daily_report": [
        ["--date", "9999-12-31"],
        ["--date", "0001-01-01"],
        ["--date", "notadate"],
        ["--date", "2026-13-01"],
        ["--date", HUGE],
        ["--date", "2026-11-01", "--csv", "/nonexistent/dir/report.csv"],
    ],
    "show_config": [["--bogus"]],
    "sync_schedules": [["--bogus"]],
    "migrate_demo": [["--bogus"]],
    "check_worker": [
        ["--timeout", "1e400"],
        ["--timeout", "nan"],
        ["--timeout", "-1"],
        ["--timeout", HUGE],
    ],
    # DEBUG is off under tests: [] is refused without --force.
    "seed_demo": [["--bogus"], [], ["--force", "--username", "u" * 200], ["--force", "--username", "a b"]],
    "create_webhook_endpoint": [
        ["https://app.example.com/hooks", "--events", "tenant.exploded"],
        ["https://app.example.com/hooks", "--events", HUGE],
        ["https://app.example.com/hooks", "--events", ","],
        ["https://app.example.com/hooks"],
        ["ftp://app.example.com/hooks", "--events", "all"],
        ["not a url", "--events", "all"],
        ["https://" + "a" * 3000 + ".example.com/", "--events", "all"],
        ["https://app.example.com/hooks", "--events", "all", "--description", "d" * 201],
        ["https://app.example.com/hooks", "--events", "all", "--description", "bad\x00description"],
    ],
    "deliver_webhooks": [
        ["--limit", "0"],
        ["--limit", "x"],
        ["--limit", HUGE],
    ],
    "create_tenant": [
        ["X", "--free-allowance", "1e15"],
        ["X", "--free-allowance", "1e400"],
        ["X", "--free-allowance", "NaN"],
        ["X", "--free-allowance", "-1"],
        ["X", "--free-allowance", "0.0000001"],
        ["X", "--free-allowance", HUGE],
        ["X", "--plan", "gold"],
        ["X" * 300],
        ["bad\x00name"],
        ["X", "--key-name", "k" * 51],
        ["{tenant}"],
        ["X", "--external-id", " padded"],
        ["X", "--apigateway-key-id", "not-a-key-id"],
        ["X", "--external-id", "a\x00b"],
        ["X", "--external-id", "e" * 256],
        ["X", "--external-id", "{tenant}"],
    ],
    "create_platform_key": [
        ["  "],
        ["k" * 51],
        ["bad\x00name"],
        ["backend", "--scopes", "admin:all"],
        ["backend", "--scopes", ","],
    ],
    "create_api_key": [
        ["nobody"],
        ["9" * 30],
        ["9" * 5000],
        ["²"],
        ["{tenant}", "--name", "n" * 51],
        ["{tenant}", "--name", "a\x00b"],
    ],
    "onboard_tenant": [["nobody"], ["{tenant}", "--subscription", "sub_1"], ["{tenant}"]],
    "handle_stripe_event": [
        ["/nonexistent/event.json"],
        ["{files}/nested.json"],
        ["{files}/binary.json"],
        ["{files}/not-an-event.json"],
    ],
    "report_usage": [["--bogus"], []],  # no STRIPE_API_KEY under tests
    "sync_stripe": [["--tenant", "nobody"], ["--tenant", "{tenant}"]],
    "reconcile_usage": [
        ["--since", "9999-12-31"],
        ["--since", "notadate"],
        ["--since", "2026-13-01"],
        ["--since", HUGE],
    ],
    "create_budget": [
        ["--name", "b", "--amount", "0"],
        ["--name", "b", "--amount", "1e400"],
        ["--name", "b", "--amount", "NaN"],
        ["--name", "b", "--amount", HUGE],
        ["--name", "b", "--amount", "10", "--pass-through", "--tenant", "{tenant}", "--markup", "1e9"],
        ["--name", "b", "--amount", "10", "--markup", "5"],
        ["--name", "b", "--amount", "10", "--thresholds", "50,x"],
        ["--name", "b", "--amount", "10", "--emails", "not-an-address"],
        ["--name", "b", "--amount", "10", "--tenant", "nobody"],
        ["--name", "b" * 300, "--amount", "10"],
    ],
    "check_costs": [
        ["--date", "9999-12-31"],
        ["--date", "0001-01-01"],
        ["--date", "2026-13-01"],
        ["--date", "notadate"],
    ],
}


def test_every_project_command_subclasses_the_base_command_and_has_bad_arguments_listed():
    commands = project_commands()
    # Every command module on disk is found (none shadowed by another app's command of that name).
    on_disk = {
        path.stem
        for app in PROJECT_APPS
        for path in (ROOT / app / "management" / "commands").glob("*.py")
        if path.stem != "__init__"
    }
    assert len(on_disk) >= 17
    assert sorted(commands) == sorted(on_disk)
    not_ours = [
        name for name, app in commands.items() if not isinstance(load_command_class(app, name), BaseCommand)
    ]
    assert not_ours == [], "these commands do not subclass core.commands.BaseCommand"
    assert sorted(BAD_ARGUMENTS) == sorted(commands), "every command needs its bad arguments listed"


def run_as_manage_py(capsys, monkeypatch, name: str, *args: str) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of `manage.py name args`, run in this process."""
    # run_from_argv closes the connections when it ends; the test's transaction must survive it.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    command = load_command_class(project_commands()[name], name)
    capsys.readouterr()
    try:
        command.run_from_argv(["manage.py", name, "--skip-checks", *args])
        status = 0
    except SystemExit as exited:
        status = exited.code
    out, err = capsys.readouterr()
    return status, [line for line in err.splitlines() if line.strip()], out


@pytest.mark.parametrize(
    ("name", "args"),
    [(name, args) for name, cases in BAD_ARGUMENTS.items() for args in cases],
    ids=[f"{name}:{' '.join(args)[:60]}" for name, cases in BAD_ARGUMENTS.items() for args in cases],
)
def test_a_bad_run_of_each_command_is_one_error_line_and_a_non_zero_exit(
    capsys, monkeypatch, tmp_path, name, args
):
    tenant = TenantFactory(slug="acme")
    MeterFactory(code="api_calls", name="API calls", aggregation="count")
    (tmp_path / "nested.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage\x9c")
    (tmp_path / "not-an-event.json").write_text('{"object": "event", "id": 1}')
    rows = (Tenant.objects.count(), TenantAPIKey.objects.count(), Meter.objects.count())
    args = [arg.format(tenant=tenant.slug, meter="api_calls", files=tmp_path) for arg in args]

    status, stderr, _ = run_as_manage_py(capsys, monkeypatch, name, *args)

    assert status not in (0, None)
    assert len(stderr) == 1, stderr
    assert "Traceback" not in stderr[0]
    assert stderr[0].startswith(("CommandError: ", f"manage.py {name}: error: ")), stderr[0]
    assert len(stderr[0]) < 400
    if name.startswith("create_"):
        assert (Tenant.objects.count(), TenantAPIKey.objects.count(), Meter.objects.count()) == rows


def error_of(capsys, monkeypatch, name, *args) -> str:
    status, stderr, _ = run_as_manage_py(capsys, monkeypatch, name, *args)
    assert status != 0
    assert len(stderr) == 1, stderr
    return stderr[0]


def test_aggregate_usage_full_since_notadate_is_one_error_line(capsys, monkeypatch):
    assert error_of(capsys, monkeypatch, "aggregate_usage", "--full", "--since", "notadate") == (
        "manage.py aggregate_usage: error: argument --since: must be an ISO-8601 string such as "
        "2026-11-21T10:00:00Z"
    )


def test_prune_usage_events_older_than_99999999999_days_is_one_error_line(capsys, monkeypatch):
    assert error_of(capsys, monkeypatch, "prune_usage_events", "--older-than-days", "99999999999") == (
        "manage.py prune_usage_events: error: argument --older-than-days: must be between 1 and 36500"
    )


@pytest.mark.parametrize("name", ["send_daily_report", "check_costs"])
def test_date_9999_12_31_is_one_error_line(capsys, monkeypatch, name):
    assert error_of(capsys, monkeypatch, name, "--date", "9999-12-31") == (
        f"manage.py {name}: error: argument --date: must be between 2000-01-01 and 2100-12-31"
    )


def test_create_tenant_free_allowance_1e15_is_refused_and_nothing_is_saved(capsys, monkeypatch):
    message = error_of(capsys, monkeypatch, "create_tenant", "Big", "--free-allowance", "1e15")
    assert message.startswith("CommandError: monthly_free_allowance: ")
    assert "14 digits before the decimal point" in message
    assert not Tenant.objects.exists()
    assert not TenantAPIKey.objects.exists()


def test_the_largest_free_allowance_the_database_holds_is_accepted_and_reads_back(capsys, monkeypatch):
    from django.db import connection

    largest = "999999999.999999" if connection.vendor == "sqlite" else "99999999999999.999999"
    status, stderr, _ = run_as_manage_py(
        capsys, monkeypatch, "create_tenant", "Big", "--free-allowance", largest
    )
    assert (status, stderr) == (0, [])
    assert str(Tenant.objects.get(slug="big").monthly_free_allowance) == largest


def test_on_sqlite_a_free_allowance_it_would_round_is_refused_and_nothing_is_saved(capsys, monkeypatch):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite stores decimals as floating point; PostgreSQL holds all 20 digits")
    message = error_of(
        capsys, monkeypatch, "create_tenant", "Big", "--free-allowance", "99999999999999.999999"
    )
    assert message.startswith("CommandError: monthly_free_allowance: Ensure that there are no more than 15")
    assert not Tenant.objects.exists()


def test_an_unknown_error_of_a_command_is_not_swallowed():
    """The base turns only the platform's own domain errors into one line: a bug keeps its traceback."""

    class Broken(BaseCommand):
        def handle(self, *args, **options):
            raise KeyError("bug")

    with pytest.raises(KeyError):
        Broken().execute(skip_checks=True, force_color=False, no_color=False)


def test_a_domain_error_a_command_lets_through_becomes_one_line():
    from django.core.exceptions import ValidationError
    from django.core.management.base import CommandError

    from core.parsing import parse_date

    class Lenient(BaseCommand):
        def handle(self, *args, **options):
            parse_date("9999-12-31", what="--date")

    class Invalid(BaseCommand):
        def handle(self, *args, **options):
            raise ValidationError({"name": ["is wrong\nreally"]})

    with pytest.raises(CommandError, match=r"^--date must be between 2000-01-01 and 2100-12-31$"):
        Lenient().execute(skip_checks=True, force_color=False, no_color=False)
    with pytest.raises(CommandError, match=r"^name: is wrong really$"):
        Invalid().execute(skip_checks=True, force_color=False, no_color=False)


def test_manage_py_prints_one_line_without_traceback_for_a_huge_number(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "prune_usage_events", "--older-than-days", "99999999999"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "manage.py prune_usage_events: error: argument --older-than-days: must be between 1 and 36500"
    ]
