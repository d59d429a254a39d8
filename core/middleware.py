"""Request id and log context for every request, and one access log line per request."""

import logging
import re
import time
import uuid

from django.core.signals import request_finished

from core.logging import log_context_bind, log_context_clear

REQUEST_ID_HEADER = "X-Request-ID"
# Accept a caller's id (a load balancer's or a client's) only if it is short and plain, so it can
# neither forge log lines nor bloat them; otherwise make our own.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:;=+/@-]{8,128}")
# Probes and scrapes come every few seconds and say nothing about traffic.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

access_logger = logging.getLogger("billing_platform.access")


def request_id_from(header: str | None) -> str:
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """First in MIDDLEWARE: binds the request id (echoed in X-Request-ID) for every log line.

    The tenant is bound by the API-key authentication once it knows the key. The context is
    cleared on `request_finished`, not here, because Django logs 4xx/5xx responses
    (`django.request`) after the middleware chain has returned.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        log_context_clear()
        log_context_bind(request_id=request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        if request.path not in _QUIET_PATHS:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            access_logger.info(
                "%s %s %s %sms",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                },
            )
        return response


def _clear_context(**kwargs):
    log_context_clear()


request_finished.connect(_clear_context, dispatch_uid="core.middleware.clear_log_context")


class ApiInputErrorMiddleware:
    """The edge's safety net for views outside DRF: a `core.parsing.ParseError` (outside
    text the bounded parser refused) escaping a view under /api/ answers 400 in the API's error shape.
    DRF views get the same from core.api_errors.exception_handler. Nothing else is
    caught: any other exception is a bug and stays a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.http import JsonResponse

        from core.api_errors import error_body
        from core.parsing import ParseError

        if isinstance(exception, ParseError) and request.path.startswith("/api/"):
            return JsonResponse(error_body("invalid", str(exception)), status=400)
        return None
