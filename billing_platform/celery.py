"""The Celery app: broker from REDIS_URL (or the demo's filesystem broker), tasks autodiscovered."""

import os
import socket
from pathlib import Path

from celery import Celery

# These modules connect Celery signal receivers: log context and format, task metrics, beat heartbeat.
from core import beat, metrics  # noqa: F401
from core import logging as platform_logging  # noqa: F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_platform.settings")

app = Celery("billing_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Every periodic task, the heartbeat included, is declared in settings.PERIODIC_TASKS and synced into
# django-celery-beat's tables (core/schedules.py), where the database scheduler reads it.

if app.conf.broker_url.startswith("filesystem://"):
    # The demo's filesystem broker needs its folders to exist before anyone publishes.
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        Path(app.conf.broker_transport_options[key]).mkdir(parents=True, exist_ok=True)


@app.task(name="billing_platform.worker_check", acks_late=False)
def worker_check() -> dict:
    """Prove a worker consumes the queue and reaches the database (see `check_worker`)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "database": connection.vendor}


@app.task(name=beat.HEARTBEAT_TASK, acks_late=False, ignore_result=True)
def beat_heartbeat() -> None:
    """Published by beat every minute; beat records the heartbeat when it publishes (see beat.py)."""
