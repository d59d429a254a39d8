import shutil
import subprocess
import time

import pytest
import redis

from conftest import free_port
from core import beat, health
from core.beat import HEARTBEAT_MAX_AGE_SECONDS, beat_heartbeat_age, beat_heartbeat_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def disposable_redis():
    """A Redis server of this test's own, so the test can stop it."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (scripts/services.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, url
    proc.kill()
    proc.wait()


def test_healthz_answers_while_the_process_lives(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_without_redis_configured_checks_only_the_database(client, settings):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert "REDIS_URL not set" in body["checks"]["redis"]["skipped"]
    assert "worker" not in body["checks"]


def test_readyz_reports_a_stopped_redis_as_not_ready(client, settings, disposable_redis):
    proc, url = disposable_redis
    settings.REDIS_URL = url
    before = client.get("/readyz").json()
    assert before["checks"]["redis"]["ok"] is True

    proc.terminate()
    proc.wait(timeout=10)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["worker"]["ok"] is False


@pytest.mark.worker
@pytest.mark.redis
def test_readyz_is_ready_with_redis_and_a_live_worker(client, settings, redis_url, celery_worker_process):
    settings.REDIS_URL = redis_url
    beat_heartbeat_record()
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    workers = response.json()["checks"]["worker"]["workers"]
    assert any(name.startswith("test-") for name in workers)


@pytest.fixture
def redis_and_worker_up(settings, monkeypatch):
    """REDIS_URL configured, Redis and a worker answering: only beat is left to check."""
    settings.REDIS_URL = "redis://redis.invalid:6379/0"
    monkeypatch.setattr(health, "_check_redis", lambda: None)
    monkeypatch.setattr(health, "_check_worker", lambda: {"workers": ["worker@test"]})


def test_readyz_is_not_ready_without_a_beat_heartbeat(client, redis_and_worker_up):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["worker"]["ok"] is True
    assert body["checks"]["beat"]["ok"] is False
    assert "no Celery beat heartbeat" in body["checks"]["beat"]["error"]


def test_readyz_is_ready_with_a_fresh_beat_heartbeat(client, redis_and_worker_up):
    beat_heartbeat_record()
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["beat"]["heartbeat_age_s"] < 5


def test_readyz_names_a_stale_beat_heartbeat(client, redis_and_worker_up):
    import time

    beat_heartbeat_record(at=time.time() - HEARTBEAT_MAX_AGE_SECONDS - 30)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "heartbeat is 2" in response.json()["checks"]["beat"]["error"]


def test_beat_records_its_heartbeat_when_it_starts_and_publishes_the_heartbeat_task():
    from celery import signals

    assert beat_heartbeat_age() is None
    signals.beat_init.send(sender=None)
    assert beat_heartbeat_age() < 5

    beat_heartbeat_record(at=0)
    signals.after_task_publish.send(sender="metering.aggregate_usage", body=None)
    assert beat_heartbeat_age() > HEARTBEAT_MAX_AGE_SECONDS  # another task's publication is no heartbeat
    signals.after_task_publish.send(sender=beat.HEARTBEAT_TASK, body=None)
    assert beat_heartbeat_age() < 5


def test_the_heartbeat_is_a_declared_periodic_task():
    from django.conf import settings

    from billing_platform.celery import app

    [entry] = [e for e in settings.PERIODIC_TASKS if e["task"] == beat.HEARTBEAT_TASK]
    assert entry["interval"] == {"every": beat.HEARTBEAT_INTERVAL_SECONDS, "period": "seconds"}
    assert beat.HEARTBEAT_TASK in app.tasks


def test_api_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    spec = schema.json()
    assert "/api/v1/tenant" in spec["paths"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "Authorization"
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()  # served from the installed sidecar package, works offline


def test_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "No such endpoint."}}
