import io
import os
import re

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from conftest import ROOT
from console.management.commands.show_config import mask_secret
from core.env import RecordingEnv

STRIPE_KEY = "sk_test_" + "a" * 24


def show_config() -> dict[str, tuple[str, str]]:
    out = io.StringIO()
    call_command("show_config", stdout=out)
    rows = {}
    for line in out.getvalue().splitlines():
        name, source, value = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[name] = (source, value)
    return rows


@pytest.fixture
def recorded(settings, monkeypatch):
    """Settings as if read from this environment."""
    environment = {
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": "whsec_0123456789abcdefghij",
        "DATABASE_URL": "postgres://billing:hunter2@db.internal:5432/billing",
        "REDIS_URL": "redis://:redispass@redis:6379/0",
        "METRICS_TOKEN": "metrics-token-0123456789",
        "EMAIL_HOST_PASSWORD": "mailpass",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "DJANGO_SECURE_HSTS_SECONDS": "600",
    }
    for name in ("AWS_ENDPOINT_URL", "DEMO_ADMIN_USER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    env = RecordingEnv()
    env.ENVIRON = environment
    env.bool("DJANGO_DEBUG", default=True)
    env.str("DJANGO_SECRET_KEY", default="")
    env.str("STRIPE_API_KEY", default="")
    env.str("STRIPE_WEBHOOK_SECRET", default="")
    env.db_url("DATABASE_URL", default="sqlite:///db.sqlite3")
    env.str("REDIS_URL", default="")
    env.str("METRICS_TOKEN", default="")
    env.str("EMAIL_HOST_PASSWORD", default="")
    env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
    env.str("LOG_LEVEL", default="INFO")
    settings.ENVIRONMENT_READS = env.reads
    return environment


def test_secrets_are_masked_and_sources_named(recorded):
    rows = show_config()
    assert rows["STRIPE_API_KEY"] == ("environment", "sk_t…(32 chars)")
    assert rows["STRIPE_WEBHOOK_SECRET"] == ("environment", "whse…(26 chars)")
    assert rows["METRICS_TOKEN"] == ("environment", "metr…(24 chars)")
    assert rows["EMAIL_HOST_PASSWORD"] == ("environment", "…(8 chars)")
    assert rows["DATABASE_URL"] == ("environment", "postgres://billing:****@db.internal:5432/billing")
    assert rows["REDIS_URL"] == ("environment", "redis://:****@redis:6379/0")
    assert rows["DJANGO_SECRET_KEY"] == ("default", "(empty)")
    assert rows["DJANGO_DEBUG"] == ("default", "True")
    assert rows["DJANGO_ALLOWED_HOSTS"] == ("default", "127.0.0.1,localhost")
    assert rows["LOG_LEVEL"] == ("default", "INFO")
    assert rows["AWS_SECRET_ACCESS_KEY"] == ("environment (boto3)", "wJal…(40 chars)")
    assert rows["AWS_ENDPOINT_URL"][0] == "unset (boto3)"
    assert rows["DEMO_ADMIN_USER"] == ("unset (seed_demo)", "admin")


def test_no_secret_value_is_printed(recorded):
    out = io.StringIO()
    call_command("show_config", stdout=out)
    text = out.getvalue()
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "METRICS_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert recorded[name] not in text
    for password in ("hunter2", "redispass", "mailpass"):
        assert password not in text


def test_variables_read_only_in_another_configuration_are_listed(recorded):
    rows = show_config()
    # DJANGO_DEBUG is on by default, so settings.py never reads the production-only variables.
    assert rows["DJANGO_SECURE_HSTS_SECONDS"] == ("environment, not used here", "600")
    assert rows["DJANGO_BEHIND_TLS_PROXY"] == ("not used in this configuration", "-")


def test_every_variable_in_settings_is_shown():
    source = (ROOT / "billing_platform" / "settings.py").read_text()
    names = set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    assert {"DJANGO_SECRET_KEY", "STRIPE_API_KEY", "METRICS_TOKEN", "LOG_FORMAT"} <= names
    assert names <= set(show_config())


def test_the_real_settings_record_their_reads():
    reads = django_settings.ENVIRONMENT_READS
    assert reads["DJANGO_DEBUG"].from_environment is ("DJANGO_DEBUG" in os.environ)
    assert reads["LOG_LEVEL"].value == os.environ.get("LOG_LEVEL", "INFO")
    assert reads["METRICS_TOKEN"].value == os.environ.get("METRICS_TOKEN", "")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("", "(empty)"), (None, "(empty)"), ("short", "…(5 chars)"), ("rk_live_" + "b" * 24, "rk_l…(32 chars)")],
)
def test_mask_secret(value, shown):
    assert mask_secret(value) == shown
