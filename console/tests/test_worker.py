"""A real Celery worker process, on the test Redis and the test PostgreSQL database."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing_platform.celery import worker_check

pytestmark = [pytest.mark.django_db, pytest.mark.worker, pytest.mark.redis]


def test_a_task_runs_on_the_worker_against_postgres(celery_worker_process):
    result = worker_check.delay().get(timeout=30)
    assert result["database"] == "postgresql"
    assert result["pid"] == celery_worker_process.pid


def test_check_worker_command_reports_the_worker(celery_worker_process):
    out = StringIO()
    call_command("check_worker", "--timeout", "30", stdout=out)
    assert f"(pid {celery_worker_process.pid}) ran the check on postgresql" in out.getvalue()


def test_check_worker_without_redis_says_so(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL is not set"):
        call_command("check_worker", stdout=StringIO())
