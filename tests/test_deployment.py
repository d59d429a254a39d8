"""What runs outside the test process: docker-compose's commands, production settings, env errors."""

import importlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from celery.bin.celery import celery as celery_cli
from django.core.management import get_commands
from django.utils.module_loading import import_string

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k3v!x9-Qm2#pL7@wZ4$rT8^yB1&nC6*dF0(hJ5)sG3_aE2+uV9=oI4%lM7~eR1qP",
    "DJANGO_ALLOWED_HOSTS": "billing.example.com",
}


def _manage(*args, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _commands(service: dict) -> list[list[str]]:
    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def _assert_runnable(argv: list[str]) -> None:
    program, *args = argv
    if program == "python" and args[0] == "manage.py":
        assert args[1] in get_commands(), f"no management command {args[1]!r}"
    elif program == "gunicorn":
        assert shutil.which("gunicorn", path=str(Path(sys.executable).parent)), "gunicorn not installed"
        module, _, attribute = args[0].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute))
    elif program == "celery":
        assert args[0] == "-A"
        app = importlib.import_module(args[1]).celery_app
        assert app.main == "billing_platform"
        assert args[2] in celery_cli.commands, f"no celery command {args[2]!r}"
        if "--scheduler" in args:
            import_string(args[args.index("--scheduler") + 1].replace(":", "."))
    else:
        pytest.fail(f"unexpected program {program!r} in docker-compose.yml")


def test_compose_has_every_service_and_each_command_exists():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "beat"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    seen = []
    for name in ("web", "worker", "beat"):
        for argv in _commands(services[name]):
            _assert_runnable(argv)
            seen.append(
                (name, argv[0], argv[3] if argv[0] == "celery" else argv[1 if argv[0] == "gunicorn" else 2])
            )
    assert ("web", "python", "migrate") in seen
    assert ("web", "gunicorn", "billing_platform.wsgi:application") in seen
    assert ("worker", "celery", "worker") in seen
    assert ("beat", "celery", "beat") in seen


def test_compose_app_services_get_the_environment_they_need():
    services = _compose()["services"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DJANGO_DEBUG"] == "0"
        assert env["DATABASE_URL"].startswith("postgres://billing:billing@postgres:5432/")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert "DJANGO_SECRET_KEY" in env
        assert set(services[name]["depends_on"]) == {"postgres", "redis"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements/prod.txt" in dockerfile
    assert (ROOT / "requirements" / "prod.txt").exists()


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    proc = _manage("check", "--deploy", "--fail-level", "DEBUG", env=PRODUCTION_ENV, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "System check identified no issues (0 silenced)." in proc.stdout


def test_production_without_a_secret_key_is_one_clear_line(tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    proc = _manage("check", env=env, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0"
    ]


def test_malformed_database_url_is_one_clear_line(tmp_path):
    proc = _manage("check", env={"DATABASE_URL": "nosuchdb://x"}, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "nosuchdb" in proc.stderr


def test_no_variables_means_sqlite_no_redis_and_no_keys(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.REDIS_URL == '', s.CELERY_BROKER_URL, "
        "s.STRIPE_API_KEY == '', s.DEBUG)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "billing_platform.settings",
            "CELERY_DATA_DIR": str(tmp_path / "celery"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "django.db.backends.sqlite3",
        "True",
        "filesystem://localhost/",
        "True",
        "True",
    ]
