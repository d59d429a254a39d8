"""Liveness and readiness probes.

/healthz answers while the process can serve a request at all. /readyz checks what a request
needs: the database always; Redis, at least one Celery worker and a live Celery beat (its heartbeat,
see core/beat.py) when REDIS_URL is configured.
"""

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.beat import HEARTBEAT_MAX_AGE_SECONDS, beat_heartbeat_age

CHECK_TIMEOUT_SECONDS = 1.0


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _timed(check):
    started = time.monotonic()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, whatever its type
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    if detail:
        result.update(detail)
    return result


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis():
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_worker():
    from celery import current_app  # the project's Celery app (billing_platform/celery.py)

    replies = current_app.control.ping(timeout=CHECK_TIMEOUT_SECONDS)
    if not replies:
        raise RuntimeError("no Celery worker answered a ping")
    return {"workers": sorted(name for reply in replies for name in reply)}


def _check_beat():
    age = beat_heartbeat_age()
    if age is None:
        raise RuntimeError("no Celery beat heartbeat recorded (is beat running?)")
    if age > HEARTBEAT_MAX_AGE_SECONDS:
        raise RuntimeError(
            f"the last Celery beat heartbeat is {age:.0f}s old (limit {HEARTBEAT_MAX_AGE_SECONDS}s)"
        )
    return {"heartbeat_age_s": round(age, 1)}


def readiness() -> tuple[bool, dict]:
    checks = {"database": _timed(_check_database)}
    if settings.REDIS_URL:
        checks["redis"] = _timed(_check_redis)
        if checks["redis"]["ok"]:
            checks["worker"] = _timed(_check_worker)
            checks["beat"] = _timed(_check_beat)
        else:
            checks["worker"] = {"ok": False, "error": "not checked: Redis is unreachable"}
            checks["beat"] = {"ok": False, "error": "not checked: Redis is unreachable"}
    else:
        checks["redis"] = {"ok": True, "skipped": "REDIS_URL not set (embedded demo)"}
    ready = all(check["ok"] for check in checks.values())
    return ready, checks


@never_cache
@require_GET
def readyz(request):
    ready, checks = readiness()
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
