"""Celery beat's heartbeat, so that /readyz can tell whether beat is running.

django-celery-beat's `PeriodicTask.last_run_at` is no heartbeat: it is written only when some task
is due, and synced to the database every few minutes. Instead beat publishes a tiny task,
`billing_platform.beat_heartbeat`, every minute (declared in settings.PERIODIC_TASKS and synced into
django-celery-beat's tables like every schedule, so operators see it in admin), and the beat process
itself stamps the time in the shared cache (Redis) each time it publishes it, and once at start.
The stamp therefore proves that beat ticks and reaches the broker, whether or not a worker runs
(the worker check covers that). The task itself does nothing.
"""

import logging
import time

from celery import signals
from django.core.cache import cache

HEARTBEAT_TASK = "billing_platform.beat_heartbeat"
HEARTBEAT_INTERVAL_SECONDS = 60
# Three missed beats: beat may be busy sending a burst of due tasks, or restarting.
HEARTBEAT_MAX_AGE_SECONDS = 3 * HEARTBEAT_INTERVAL_SECONDS
HEARTBEAT_CACHE_KEY = "celery-beat:heartbeat"

logger = logging.getLogger(__name__)


def beat_heartbeat_record(*, at: float | None = None) -> None:
    cache.set(HEARTBEAT_CACHE_KEY, time.time() if at is None else at, timeout=10 * HEARTBEAT_MAX_AGE_SECONDS)


def beat_heartbeat_age() -> float | None:
    """Seconds since beat's last heartbeat, or None when none is recorded."""
    stamp = cache.get(HEARTBEAT_CACHE_KEY)
    return None if stamp is None else max(0.0, time.time() - float(stamp))


def _record_quietly() -> None:
    try:
        beat_heartbeat_record()
    except Exception:  # a heartbeat that cannot be written must never stop beat
        logger.warning("could not record the beat heartbeat", exc_info=True)


@signals.beat_init.connect(dispatch_uid="core.beat.beat_init")
def _beat_started(**kwargs):
    _record_quietly()


@signals.after_task_publish.connect(dispatch_uid="core.beat.after_task_publish")
def _heartbeat_published(sender=None, **kwargs):
    if sender == HEARTBEAT_TASK:
        _record_quietly()
