"""Structured logs: one JSON object per line in production, readable text in the demo.

Every line carries its context: the request id and the tenant of an HTTP request, the id and name
of a Celery task. The context lives in contextvars, set by `RequestContextMiddleware`, the API-key
authentication and Celery's task signals; `ContextFilter`, on the handler, copies it onto every
record, whichever library logged it. Both formatters scrub secrets (Stripe keys, webhook secrets,
API keys, bearer tokens, passwords in URLs) from the finished line, whatever put them there.
"""

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

from celery import signals

_CONTEXT = {
    name: contextvars.ContextVar(name, default=None)
    for name in ("request_id", "tenant", "tenant_id", "platform_key", "task_id", "task_name")
}
CONTEXT_FIELDS = tuple(_CONTEXT)

_SECRETS = re.compile(
    r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+"  # Stripe secret and restricted keys
    r"|\bwhsec_[A-Za-z0-9+/=]+"  # Stripe webhook signing secrets
    r"|(?i:(?<=Api-Key )|(?<=Bearer ))[^\s\"'\\,;]+"  # Authorization header values
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"'\\]+):[^@/\s\"'\\]+@")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    text = _SECRETS.sub(REDACTED, text)
    return _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", text)


def log_context_bind(**values) -> None:
    """Set context fields (request_id, tenant, tenant_id, platform_key, task_id, task_name) for what
    follows."""
    for name, value in values.items():
        _CONTEXT[name].set(value)


def log_context_clear() -> None:
    for var in _CONTEXT.values():
        var.set(None)


def log_context() -> dict:
    return {name: var.get() for name, var in _CONTEXT.items()}


class ContextFilter(logging.Filter):
    """Copies the current context onto the record; a value passed in `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", *CONTEXT_FIELDS}
# Django passes the request object itself to django.request/django.server lines: not data.
_SKIPPED_EXTRAS = frozenset({"request", "server_time"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            line[name] = getattr(record, name, None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in _SKIPPED_EXTRAS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`2026-11-21 10:00:00,123 INFO logger message [request_id=… tenant=… task=name[id]]`."""

    def __init__(self, fmt=None, datefmt=None, style="%", **kwargs):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt, style, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = []
        if getattr(record, "request_id", None):
            context.append(f"request_id={record.request_id}")
        if getattr(record, "tenant", None):
            context.append(f"tenant={record.tenant}")
        if getattr(record, "task_name", None):
            context.append(f"task={record.task_name}[{record.task_id}]")
        if context:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{' '.join(context)}]{newline}{rest}"
        return redact(text)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


# --- Celery: task context, and our format on the handlers Celery sets up in workers and beat ---


@signals.task_prerun.connect(dispatch_uid="core.logging.task_prerun")
def _task_prerun(sender=None, task_id=None, task=None, **kwargs):
    request_id = getattr(getattr(task, "request", None), "request_id", None)
    log_context_bind(task_id=task_id, task_name=getattr(task, "name", None), request_id=request_id)


@signals.task_postrun.connect(dispatch_uid="core.logging.task_postrun")
def _task_postrun(**kwargs):
    log_context_bind(task_id=None, task_name=None, request_id=None)


@signals.before_task_publish.connect(dispatch_uid="core.logging.before_task_publish")
def _propagate_request_id(headers=None, **kwargs):
    # A task queued while serving a request logs that request's id too (Celery exposes custom
    # message headers as attributes of task.request).
    request_id = _CONTEXT["request_id"].get()
    if request_id and headers is not None:
        headers.setdefault("request_id", request_id)


@signals.after_setup_logger.connect(dispatch_uid="core.logging.after_setup_logger")
@signals.after_setup_task_logger.connect(dispatch_uid="core.logging.after_setup_task_logger")
def _format_celery_handlers(logger=None, **kwargs):
    # Celery replaces the root logger's handlers with its own (stderr or --logfile); keep them and
    # their destination, but give them our format and context.
    from django.conf import settings

    formatter = formatter_for(getattr(settings, "LOG_FORMAT", "text"))
    for handler in logger.handlers if logger is not None else ():
        handler.setFormatter(formatter)
        if not any(isinstance(existing, ContextFilter) for existing in handler.filters):
            handler.addFilter(ContextFilter())
