"""Alerts: raised once per (budget, month, threshold, actual|forecast) or spike day, sent through SNS and
e-mail, acknowledged or snoozed by operators."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.aws import AwsError, aws_call
from core.money import format_money as money
from core.money import percent as percent_of
from core.money import plain_decimal
from core.notify import Email, email_deliver, email_render, sns_publish, sns_subject
from costwatch.budgets import Judgement
from costwatch.models import Alert, Budget, BudgetEvaluation, CostCheckRun
from metering.estimates import month_bounds
from outbound.services import webhook_event_publish
from tenants.events import tenant_event_block


def _percent(part: Decimal, whole: Decimal) -> str:
    return f"{percent_of(part, whole)}%"


def _alert_text(name: str, context: dict) -> tuple[str, str]:
    """The alert's subject (SNS's rules) and message, rendered from emails/<name>-*.txt."""
    email = email_render(name, context)
    return sns_subject(email.subject), email.text


def _threshold_text(
    *, budget: Budget, evaluation: BudgetEvaluation, kind: str, percent: Decimal
) -> tuple[str, str]:
    currency = budget.currency
    judged = evaluation.actual if kind == Alert.Kind.ACTUAL else evaluation.forecast
    context = {
        "budget": budget,
        "evaluation": evaluation,
        "what": "spend" if kind == Alert.Kind.ACTUAL else "forecast",
        "judged_percent": _percent(judged, budget.amount),
        "amount": money(budget.amount, currency),
        "threshold": plain_decimal(percent),
        "threshold_amount": money(budget.amount * percent / 100, currency),
        "checked_date": evaluation.run.checked_date,
        "actual": money(evaluation.actual, currency),
        "actual_percent": _percent(evaluation.actual, budget.amount),
        "forecast": money(evaluation.forecast, currency),
        "forecast_percent": _percent(evaluation.forecast, budget.amount),
    }
    return _alert_text("budget-threshold", context)


def _anomaly_text(*, budget: Budget, evaluation: BudgetEvaluation, day: date, cost: Decimal, mean: Decimal):
    currency = budget.currency
    context = {
        "budget": budget,
        "day": day,
        "cost": money(cost, currency),
        "mean": money(mean, currency),
        "actual": money(evaluation.actual, currency),
        "amount": money(budget.amount, currency),
        "forecast": money(evaluation.forecast, currency),
    }
    return _alert_text("budget-anomaly", context)


def _raise(*, budget: Budget, run: CostCheckRun, now: datetime, **fields) -> Alert | None:
    """Store the alert unless it exists (the unique constraints decide); None when it did."""
    snoozed = budget.snoozed_until is not None and budget.snoozed_until > now
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                budget=budget,
                run=run,
                status=Alert.Status.SUPPRESSED if snoozed else Alert.Status.PENDING,
                error=f"raised while the budget was snoozed until {budget.snoozed_until:%Y-%m-%d %H:%M}Z"
                if snoozed
                else "",
                **fields,
            )
            budget_alert_publish(alert=alert, snoozed=snoozed)
            return alert
    except IntegrityError:
        return None


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


def budget_alert_publish(*, alert: Alert, snoozed: bool = False) -> None:
    """The outgoing `budget.alert` webhook event of a newly raised alert, once per alert row, in the
    transaction that raised it. Snoozing silences operators' SNS and e-mail, not the SaaS's app: a
    snoozed alert is published with `snoozed: true`."""
    budget = alert.budget
    start, end = month_bounds(datetime(alert.month.year, alert.month.month, 1, tzinfo=UTC))
    threshold_amount = budget.amount * alert.threshold / 100 if alert.threshold is not None else None
    webhook_event_publish(
        type="budget.alert",
        key=f"budget.alert:{alert.pk}",
        tenant=budget.tenant,
        data={
            "tenant": tenant_event_block(budget.tenant) if budget.tenant is not None else None,
            "budget": {
                "id": budget.pk,
                "name": budget.name,
                "scope": budget.scope,
                "service": budget.service or None,
                "tag_value": budget.tag_value or None,
                "amount": _decimal(budget.amount),
                "currency": budget.currency,
            },
            "alert": {
                "id": alert.pk,
                "kind": alert.kind,  # actual | forecast (a threshold) | anomaly (a cost spike)
                "threshold_percent": _decimal(alert.threshold),
                "threshold_amount": _decimal(threshold_amount),
                "actual": _decimal(alert.actual),
                "forecast": _decimal(alert.forecast),
                "day": alert.day,
                "subject": alert.subject,
                "snoozed": snoozed,
            },
            "period": {"month": f"{alert.month:%Y-%m}", "start": start, "end": end},
        },
    )


def alerts_raise(*, judgement: Judgement, run: CostCheckRun, day: date) -> list[Alert]:
    """New alerts for what a budget's judgement found; those raised before are left alone."""
    budget, evaluation, now = judgement.budget, judgement.evaluation, timezone.now()
    raised = []
    for kind, percent in judgement.crossings:
        subject, message = _threshold_text(budget=budget, evaluation=evaluation, kind=kind, percent=percent)
        alert = _raise(
            budget=budget,
            run=run,
            now=now,
            kind=kind,
            month=evaluation.month,
            threshold=percent,
            actual=evaluation.actual,
            forecast=evaluation.forecast,
            subject=subject,
            message=message,
        )
        if alert:
            raised.append(alert)
    if judgement.anomaly:
        cost, mean = judgement.anomaly
        subject, message = _anomaly_text(budget=budget, evaluation=evaluation, day=day, cost=cost, mean=mean)
        alert = _raise(
            budget=budget,
            run=run,
            now=now,
            kind=Alert.Kind.ANOMALY,
            month=evaluation.month,
            day=day,
            actual=cost,
            forecast=evaluation.forecast,
            subject=subject,
            message=message,
        )
        if alert:
            raised.append(alert)
    return raised


@dataclass
class Delivery:
    alert: Alert
    sent: bool
    error: str = ""


def alert_deliver(*, alert: Alert) -> Delivery:
    """Send one pending (or failed) alert on each channel it has not reached yet.

    Claimed with a conditional update, so two runs at once never both send it; a channel that worked
    (an SNS message id, the addresses mailed) is not used again when another channel is retried.
    """
    claimed = Alert.objects.filter(
        pk=alert.pk, status__in=[Alert.Status.PENDING, Alert.Status.FAILED], acknowledged_at__isnull=True
    ).update(status=Alert.Status.SENDING)
    if claimed != 1:
        return Delivery(alert=alert, sent=False, error="claimed elsewhere")
    alert.refresh_from_db()
    budget = alert.budget
    topic = budget.sns_topic_arn or settings.COSTWATCH_SNS_TOPIC_ARN
    recipients = list(budget.emails or settings.OPERATOR_EMAILS)
    errors = []
    if topic and not alert.sns_message_id:
        try:
            message_id = aws_call(
                lambda: sns_publish(topic_arn=topic, subject=alert.subject, message=alert.message),
                what="SNS Publish",
                access_hint=f"allow sns:Publish on {topic}",
            )
            alert.sns_topic_arn = topic
            alert.sns_message_id = message_id
        except AwsError as exc:
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad ARN or refused publish is recorded on the alert
            errors.append(f"SNS Publish to {topic}: {exc}")
    if recipients and not alert.emailed_to:
        try:
            email = Email(subject=alert.subject, text=alert.message)
            email_deliver(email, recipients, from_email=settings.DEFAULT_FROM_EMAIL)
            alert.emailed_to = recipients
        except Exception as exc:  # noqa: BLE001 - any mail failure is recorded and retried next run
            errors.append(f"e-mail to {', '.join(recipients)}: {exc}")
    if not topic and not recipients:
        errors_note = (
            "no notification target: set the budget's SNS topic or e-mails, COSTWATCH_SNS_TOPIC_ARN or "
        )
        alert.error = errors_note + "OPERATOR_EMAILS"
        alert.status = Alert.Status.SENT
        alert.sent_at = timezone.now()
    elif errors:
        alert.error = "; ".join(errors)
        alert.status = Alert.Status.FAILED
    else:
        alert.error = ""
        alert.status = Alert.Status.SENT
        alert.sent_at = timezone.now()
    alert.save(update_fields=["status", "sns_topic_arn", "sns_message_id", "emailed_to", "error", "sent_at"])
    return Delivery(alert=alert, sent=alert.status == Alert.Status.SENT, error="; ".join(errors))


def alerts_deliver_pending() -> list[Delivery]:
    """Every alert not sent yet: new ones, and those whose delivery failed on an earlier run."""
    pending = Alert.objects.filter(
        status__in=[Alert.Status.PENDING, Alert.Status.FAILED], acknowledged_at__isnull=True
    ).select_related("budget")
    return [alert_deliver(alert=alert) for alert in pending.order_by("created_at", "pk")]


def alerts_acknowledge(*, alert_ids: list[int], user) -> int:
    """Mark alerts as seen; one not sent yet is then never sent."""
    now = timezone.now()
    with transaction.atomic():
        Alert.objects.filter(
            pk__in=alert_ids,
            acknowledged_at__isnull=True,
            status__in=[Alert.Status.PENDING, Alert.Status.FAILED],
        ).update(status=Alert.Status.SUPPRESSED)
        return Alert.objects.filter(pk__in=alert_ids, acknowledged_at__isnull=True).update(
            acknowledged_at=now, acknowledged_by=user
        )


def budgets_snooze(*, budget_ids: list[int], days: int) -> datetime:
    """Alerts of these budgets raised before the returned time are recorded, not sent."""
    until = timezone.now() + timedelta(days=days)
    Budget.objects.filter(pk__in=budget_ids).update(snoozed_until=until)
    return until
