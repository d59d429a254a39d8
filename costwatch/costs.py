"""Daily cost rows: stored idempotently from Cost Explorer, and the sums budgets and admin read."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, Sum

from costwatch.cost_explorer import CostWindow
from costwatch.models import Budget, DailyCost


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> date:
    """The last day of `day`'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def next_month(day: date) -> date:
    return month_end(day) + timedelta(days=1)


def check_window(*, day: date, restatement_days: int) -> tuple[date, date]:
    """[start, end) a check of `day` reads: the month so far, and the days AWS may still restate."""
    return min(month_start(day), day - timedelta(days=restatement_days)), day + timedelta(days=1)


def daily_costs_store(*, window: CostWindow, metric: str) -> int:
    """Make the stored rows of [window.start, window.end) exactly what Cost Explorer just said.

    Upserts on (metric, day, service, tag value), so a second run for a day updates rows instead of
    adding them; rows Cost Explorer no longer reports for the window (restated away) are deleted.
    """
    rows = [
        DailyCost(
            metric=metric,
            day=row.day,
            service=row.service,
            tag_value=row.tag_value,
            amount=row.amount,
            currency=row.currency,
            estimated=row.day in window.estimated_days,
        )
        for row in window.rows.values()
    ]
    with transaction.atomic():
        stored = DailyCost.objects.filter(metric=metric, day__gte=window.start, day__lt=window.end)
        stale = [
            pk
            for pk, day, service, tag_value in stored.values_list("pk", "day", "service", "tag_value")
            if (day, service, tag_value) not in window.rows
        ]
        if stale:
            DailyCost.objects.filter(pk__in=stale).delete()
        DailyCost.objects.bulk_create(
            rows,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["metric", "day", "service", "tag_value"],
            update_fields=["amount", "currency", "estimated", "updated_at"],
        )
    return len(rows)


def budget_scope_q(budget: Budget) -> Q:
    if budget.scope == Budget.Scope.SERVICE:
        return Q(service=budget.service)
    if budget.scope == Budget.Scope.TAG:
        return Q(tag_value=budget.tag_value)
    return Q()


def scope_daily_totals(
    *, metric: str, scope: Q, currency: str, start: date, end: date
) -> dict[date, Decimal]:
    """The scope's cost per day of [start, end), in `currency`; days without cost are absent."""
    return dict(
        DailyCost.objects.filter(scope, metric=metric, currency=currency, day__gte=start, day__lt=end)
        .order_by()
        .values("day")
        .annotate(total=Sum("amount"))
        .values_list("day", "total")
    )


def scope_total(*, metric: str, scope: Q, currency: str, start: date, end: date) -> Decimal:
    total = DailyCost.objects.filter(
        scope, metric=metric, currency=currency, day__gte=start, day__lt=end
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def other_currencies(*, metric: str, scope: Q, currency: str, start: date, end: date) -> list[str]:
    return sorted(
        set(
            DailyCost.objects.filter(scope, metric=metric, day__gte=start, day__lt=end)
            .exclude(currency=currency)
            .values_list("currency", flat=True)
        )
    )


def history_reaches(*, metric: str, day: date) -> bool:
    """Whether costs are stored for `day` or earlier (an anomaly baseline needs that much history)."""
    return DailyCost.objects.filter(metric=metric, day__lte=day).exists()
