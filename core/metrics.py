"""Prometheus metrics at /metrics.

Two kinds:
- counters and histograms of what a process does (ingestion in the web process, task outcomes in
  workers), kept by prometheus-client; under gunicorn they go through PROMETHEUS_MULTIPROC_DIR so
  that one scrape sees every worker process;
- business gauges (the reporting outbox, the webhook inbox, the circuit breaker, which stripe_sync
  registers in `business_gauges`) computed from the database at scrape time by `BusinessCollector`,
  because that work happens in Celery workers that nobody scrapes, and the database is the truth
  about it.

/metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; without METRICS_TOKEN it is a 404,
except in DEBUG from a loopback address (the demo).
"""

import functools
import hmac
import ipaddress
import logging
import os
import socket
import time

from celery import signals
from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    # Files are named by process id; web and worker containers sharing one directory can have the
    # same pids (each container counts from 1), so the host name is part of the identity.
    values.ValueClass = values.MultiProcessValue(
        process_identifier=lambda: f"{socket.gethostname()}-{os.getpid()}"
    )

INGEST_EVENTS = Counter(
    "billing_ingest_events",
    "Usage events received by POST /api/v1/events, by outcome (accepted, duplicate).",
    ["outcome"],
)
INGEST_REJECTED = Counter(
    "billing_ingest_rejected_requests",
    "Ingestion requests refused, by reason (validation, malformed_json, too_large, unsupported_media, "
    "rate_limited, unauthenticated, forbidden, server_error, ...).",
    ["reason"],
)
INGEST_LATENCY = Histogram(
    "billing_ingest_request_duration_seconds",
    "Time to answer POST /api/v1/events, any outcome.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CELERY_TASKS = Counter(
    "billing_celery_tasks",
    "Celery task runs by task name and outcome (succeeded, failed, retried).",
    ["task", "outcome"],
)
CELERY_TASK_DURATION = Histogram(
    "billing_celery_task_duration_seconds",
    "Celery task run time by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0),
)

STRIPE_REPORTS = Counter(
    "billing_stripe_reports",
    "Usage reports delivered to Stripe by the sender, by outcome (sent, failed, deferred).",
    ["outcome"],
)

_REJECT_REASONS = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media",
    429: "rate_limited",
}


def _rejection_reason(response) -> str:
    if response.status_code == 400:
        code = (getattr(response, "data", None) or {}).get("error", {}).get("code")
        return {"invalid": "validation", "parse_error": "malformed_json"}.get(code, "bad_request")
    if response.status_code >= 500:
        return "server_error"
    return _REJECT_REASONS.get(response.status_code, f"http_{response.status_code}")


def instrument_ingest(view):
    """Counts and times an ingestion view's outcomes from its response (DRF's final answer)."""

    @functools.wraps(view)
    def instrumented(request, *args, **kwargs):
        started = time.perf_counter()
        try:
            response = view(request, *args, **kwargs)
        except Exception:
            INGEST_REJECTED.labels("server_error").inc()
            raise
        finally:
            INGEST_LATENCY.observe(time.perf_counter() - started)
        if response.status_code < 300:
            data = getattr(response, "data", None) or {}
            INGEST_EVENTS.labels("accepted").inc(data.get("accepted", 0))
            INGEST_EVENTS.labels("duplicate").inc(data.get("duplicates", 0))
        else:
            INGEST_REJECTED.labels(_rejection_reason(response)).inc()
        return response

    return instrumented


# --- Celery task outcomes, counted in the process that runs the task ---------------------------

_task_started: dict[str, float] = {}


@signals.task_prerun.connect(dispatch_uid="core.metrics.task_prerun")
def _task_prerun(task_id=None, **kwargs):
    _task_started[task_id] = time.perf_counter()


@signals.task_postrun.connect(dispatch_uid="core.metrics.task_postrun")
def _task_postrun(sender=None, task_id=None, **kwargs):
    started = _task_started.pop(task_id, None)
    if started is not None and sender is not None:
        CELERY_TASK_DURATION.labels(sender.name).observe(time.perf_counter() - started)


@signals.task_success.connect(dispatch_uid="core.metrics.task_success")
def _task_success(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "succeeded").inc()


@signals.task_failure.connect(dispatch_uid="core.metrics.task_failure")
def _task_failure(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "failed").inc()


@signals.task_retry.connect(dispatch_uid="core.metrics.task_retry")
def _task_retry(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "retried").inc()


def _task_name(sender) -> str:
    return getattr(sender, "name", None) or str(sender)


# --- Business gauges, from the database at scrape time -----------------------------------------


class BusinessGauges:
    """The groups of business gauges: each a function `group(now)` yielding metric families, read
    from the database at scrape time. Apps register theirs in AppConfig.ready (stripe_sync: the
    reporting outbox, the webhook inbox, the circuit breaker), so core imports no app."""

    def __init__(self) -> None:
        self.groups: list = []

    def register(self, group) -> None:
        if group not in self.groups:
            self.groups.append(group)


business_gauges = BusinessGauges()


class BusinessCollector:
    """The registered business gauges, read from the database on each scrape.

    Each group is independent: a group whose models are missing or whose query fails is left out
    (and `billing_business_metrics_up` drops to 0) instead of failing the whole scrape.
    """

    def describe(self):
        return []  # registering must not query the database

    def collect(self):
        now = timezone.now()
        up = 1
        for group in business_gauges.groups:
            try:
                yield from list(group(now))
            except Exception:  # one broken group must not hide the others
                logger.warning("business metrics: %s failed", group.__name__, exc_info=True)
                up = 0
        yield GaugeMetricFamily(
            "billing_business_metrics_up", "1 when every business gauge could be read.", value=up
        )


def gauge_age(now, moment) -> float:
    """Seconds from `moment` to `now`; 0 when there is no moment."""
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


def metrics_registry() -> CollectorRegistry:
    """What one scrape exposes: this process's (or all processes') metrics and the business gauges."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(BusinessCollector())
    return registry


# --- The endpoint --------------------------------------------------------------------------------


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _access_denied(request) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEBUG and _is_loopback(request.META.get("REMOTE_ADDR")):
            return None
        raise Http404  # an unconfigured endpoint does not advertise itself
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode()):
        return None
    response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_GET
def metrics_view(request):
    denied = _access_denied(request)
    if denied is not None:
        return denied
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
