"""Per-API-key request rate limit for ingestion: a fixed window counter in the shared cache."""

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)
_PERIODS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(rate: str) -> tuple[int, int] | None:
    """'100/s' -> (100, 1); '' or '0' -> None (no limit)."""
    if not rate or rate.strip() in {"0", "off", "none"}:
        return None
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class ApiKeyRateThrottle(BaseThrottle):
    """Allows INGEST_RATE_LIMIT requests per key (tenant or platform key) and window; 429 with
    Retry-After beyond.

    A fixed window counted with an atomic increment costs one cache round trip per request,
    where DRF's sliding-window throttle stores and rewrites a list of timestamps.
    """

    def __init__(self):
        self._wait = None

    def allow_request(self, request, view):
        limit = parse_rate(settings.INGEST_RATE_LIMIT)
        if limit is None or request.auth is None:
            return True
        allowed, window = limit
        now = time.time()
        window_index = int(now // window)
        # Tenant keys and platform keys are two tables: their ids may coincide, their counters must not.
        kind = "plat" if getattr(request.user, "is_platform", False) else "key"
        key = f"ingest-rate:{kind}{request.auth.pk}:{window}:{window_index}"
        try:
            count = 1 if cache.add(key, 1, timeout=window + 1) else cache.incr(key)
        except Exception:
            logger.warning("rate limit cache unavailable; allowing the request", exc_info=True)
            return True
        if count <= allowed:
            return True
        self._wait = max(1, math.ceil((window_index + 1) * window - now))
        return False

    def wait(self):
        return self._wait
