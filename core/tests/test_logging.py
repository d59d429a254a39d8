import io
import json
import logging
import os
import subprocess
import sys

import pytest
from celery import Celery

from conftest import ROOT
from core.logging import ContextFilter, JsonFormatter, TextFormatter, log_context, redact

pytestmark = pytest.mark.django_db
STRIPE_KEY = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_" + "abcdefghijklmnop"


@pytest.fixture
def json_log():
    """The JSON lines the root logger writes during the test, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_tenant_request_logs_json_with_request_id_and_tenant(tenant_client, tenant, tenant_key, json_log):
    response = tenant_client.get("/api/v1/tenant", HTTP_X_REQUEST_ID="req-0123456789abcdef")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-0123456789abcdef"

    access = [line for line in json_log() if line["logger"] == "billing_platform.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "req-0123456789abcdef"
    assert line["tenant"] == "tenant-a"
    assert line["tenant_id"] == tenant.pk
    assert line["status"] == 200
    assert line["path"] == "/api/v1/tenant"
    assert {"ts", "level", "message", "task_id", "task_name"} <= set(line)
    assert tenant_key not in json.dumps(json_log())
    assert log_context()["request_id"] is None  # cleared when the response was finished


def test_an_unauthenticated_request_logs_its_id_without_tenant_or_key(api_client, json_log):
    response = api_client.get("/api/v1/tenant", HTTP_AUTHORIZATION="Api-Key pre.fix-secret-value")
    assert response.status_code == 401
    lines = json_log()
    request_id = response["X-Request-ID"]
    assert {line["logger"] for line in lines} >= {"billing_platform.access", "django.request"}
    assert all(line["request_id"] == request_id and line["tenant"] is None for line in lines)
    assert "fix-secret-value" not in json.dumps(lines)


@pytest.mark.parametrize("incoming", ["", "short", "has spaces in it", "x" * 200, "evil\nline-injected"])
def test_an_unusable_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32


def test_secrets_never_reach_a_log_line(json_log):
    log = logging.getLogger("console.tests")
    log.info("calling Stripe with %s", STRIPE_KEY)
    log.info("header", extra={"auth": "Authorization: Bearer abc.def-ghi", "secret": WEBHOOK_SECRET})
    log.info("db at postgres://billing:hunter2@db:5432/billing")
    try:
        raise RuntimeError(f"Stripe said no to {STRIPE_KEY}")
    except RuntimeError:
        log.exception("failed")
    dumped = json.dumps(json_log())
    for secret in (STRIPE_KEY, WEBHOOK_SECRET, "abc.def-ghi", "hunter2"):
        assert secret not in dumped
    assert "[redacted]" in dumped
    assert "postgres://billing:[redacted]@db:5432/billing" in dumped


def test_redaction_keeps_json_valid():
    line = json.dumps({"message": 'Authorization: "Api-Key abc.def\\" and Bearer x'})
    assert json.loads(redact(line))["message"].count("[redacted]") == 2


def test_a_task_logs_its_id_and_name(json_log):
    app = Celery("logging-test", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(name="logging_test.work")
    def work():
        logging.getLogger("console.tests").info("working")

    result = work.apply()
    [line] = [line for line in json_log() if line["message"] == "working"]
    assert line["task_id"] == result.id
    assert line["task_name"] == "logging_test.work"
    assert log_context()["task_id"] is None


def test_text_format_shows_the_context_on_the_line():
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": (STRIPE_KEY,),
            "request_id": "r-1234567",
        }
    )
    record.tenant = "tenant-a"
    text = TextFormatter().format(record)
    assert text.endswith("hello [redacted] [request_id=r-1234567 tenant=tenant-a]")


def test_celery_handlers_get_our_format(settings):
    from core.logging import _format_celery_handlers

    settings.LOG_FORMAT = "json"
    logger = logging.getLogger("console.tests.celery")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        _format_celery_handlers(logger=logger)
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, ContextFilter) for f in handler.filters)
    finally:
        logger.removeHandler(handler)


def test_production_settings_log_json_lines_to_stderr():
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "a-long-random-secret-key-for-this-test-only-0123456789",
        "DJANGO_ALLOWED_HOSTS": "billing.example.com",
    }
    env.pop("LOG_FORMAT", None)
    code = (
        "import django, logging; django.setup(); "
        f"logging.getLogger('billing_platform.x').warning('hello %s', {STRIPE_KEY!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    assert line["message"] == "hello [redacted]"
    assert line["level"] == "WARNING"
    assert line["request_id"] is None
