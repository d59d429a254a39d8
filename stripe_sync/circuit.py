"""A circuit breaker around Stripe, kept in the database so every worker and the admin see it.

STRIPE_CIRCUIT_FAILURES failed calls in a row (5xx, timeouts, connection errors, authentication)
open it for STRIPE_CIRCUIT_OPEN_SECONDS: callers stop calling and leave their work pending. When the
time is up the next call is a trial; a success closes the breaker, a failure opens it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from stripe_sync.models import CircuitBreaker

STRIPE = "stripe"


class CircuitOpen(Exception):
    def __init__(self, breaker: CircuitBreaker):
        self.open_until = breaker.open_until
        super().__init__(
            f"calls to {breaker.name} are paused until {breaker.open_until:%Y-%m-%d %H:%M:%S} UTC after "
            f"{breaker.failures} failures in a row; last error: {breaker.last_error}"
        )


def circuit_get(name: str = STRIPE) -> CircuitBreaker:
    breaker, _ = CircuitBreaker.objects.get_or_create(name=name)
    return breaker


def circuit_is_open(breaker: CircuitBreaker, now: datetime | None = None) -> bool:
    return breaker.open_until is not None and breaker.open_until > (now or timezone.now())


def circuit_check(name: str = STRIPE) -> None:
    """Raise CircuitOpen while the breaker is open."""
    breaker = circuit_get(name)
    if circuit_is_open(breaker):
        raise CircuitOpen(breaker)


def circuit_success(name: str = STRIPE) -> None:
    CircuitBreaker.objects.filter(name=name).exclude(failures=0, open_until=None).update(
        failures=0, open_until=None, updated_at=timezone.now()
    )


def circuit_failure(error: str, name: str = STRIPE) -> CircuitBreaker | None:
    """Count a failed call; returns the breaker when this failure opened (or re-opened) it."""
    now = timezone.now()
    with transaction.atomic():
        circuit_get(name)
        breaker = CircuitBreaker.objects.select_for_update().get(name=name)
        breaker.failures += 1
        breaker.last_error = error[:2000]
        opened = breaker.failures >= settings.STRIPE_CIRCUIT_FAILURES
        if opened:
            breaker.opened_at = now
            breaker.open_until = now + timedelta(seconds=settings.STRIPE_CIRCUIT_OPEN_SECONDS)
        breaker.save()
    return breaker if opened else None


def circuit_reset(name: str = STRIPE) -> None:
    """Close the breaker by hand (admin): the next call goes through."""
    CircuitBreaker.objects.filter(name=name).update(failures=0, open_until=None, updated_at=timezone.now())
