"""The daily check (`cost_check_run`): what the Beat task and `check_costs` run."""

from __future__ import annotations

import logging
import traceback
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from core.aws import AwsError
from core.money import format_money as money
from costwatch.alerts import alerts_deliver_pending, alerts_raise
from costwatch.budgets import ForecastCache, budget_judge
from costwatch.conf import CostwatchConfigError, costwatch_config
from costwatch.cost_explorer import CostExplorer
from costwatch.costs import check_window, daily_costs_store, month_start, scope_total
from costwatch.models import Budget, CostCheckRun, PassThroughCharge
from costwatch.passthrough import pass_through_settle

logger = logging.getLogger(__name__)


def default_check_date() -> date:
    """Yesterday (UTC): the last whole day Cost Explorer has when the 06:00 check runs."""
    return timezone.now().date() - timedelta(days=1)


def cost_check_run(
    *, day: date | None = None, trigger: str, explorer: CostExplorer | None = None
) -> CostCheckRun:
    """Read costs from Cost Explorer, store the daily rows, judge every budget, send alerts, bill
    pass-through overages.

    Missing credentials, Cost Explorer refused or unreachable and bad settings end the run as FAILED
    with a one-line error (returned, not raised); anything unexpected is recorded with its traceback
    and raised. `explorer`: another source of Cost Explorer's answers (the demo's, which has no AWS).
    """
    day = day or default_check_date()
    run = CostCheckRun.objects.create(trigger=trigger, checked_date=day, started_at=timezone.now())
    lines: list[str] = []
    try:
        config = costwatch_config()
        explorer = explorer or CostExplorer(config=config)
        run.window_start, run.window_end = check_window(day=day, restatement_days=config.restatement_days)
        window = explorer.daily_costs(start=run.window_start, end=run.window_end)
        run.cost_rows = daily_costs_store(window=window, metric=config.metric)
        run.estimated_days = len(window.estimated_days)
        lines.append(
            f"Cost Explorer: {run.window_start} to {run.window_end - timedelta(days=1)}, "
            f"{window.pages} page(s), "
            f"{run.cost_rows} row(s), {run.estimated_days} day(s) still estimated"
        )
        month, end = month_start(day), day + timedelta(days=1)
        run.month_to_date = scope_total(
            metric=config.metric, scope=Q(), currency=config.currency, start=month, end=end
        )
        run.unattributed = scope_total(
            metric=config.metric, scope=Q(tag_value=""), currency=config.currency, start=month, end=end
        )
        lines.append(
            f"month to date {money(run.month_to_date, config.currency)}, "
            f"unattributed {money(run.unattributed, config.currency)}"
        )

        forecasts = ForecastCache(explorer=explorer, config=config)
        for budget in Budget.objects.filter(active=True).select_related("tenant"):
            judgement = budget_judge(budget=budget, day=day, run=run, config=config, forecasts=forecasts)
            evaluation = judgement.evaluation
            note = f": {evaluation.forecast_note}" if evaluation.forecast_note else ""
            lines.append(
                f"budget {budget.name}: {money(evaluation.actual, budget.currency)} of "
                f"{money(budget.amount, budget.currency)}, "
                f"forecast {money(evaluation.forecast, budget.currency)} ({evaluation.forecast_method}{note})"
            )
            lines.extend(f"budget {budget.name}: {note}" for note in judgement.notes)
            for alert in alerts_raise(judgement=judgement, run=run, day=day):
                lines.append(f"alert raised: {alert.subject}" + (" (snoozed)" if alert.error else ""))

        failures = 0
        for delivery in alerts_deliver_pending():
            if delivery.sent:
                run.alerts_sent += 1
                lines.append(f"alert sent: {delivery.alert.subject}")
            elif delivery.error:
                failures += 1
                lines.append(f"alert not delivered: {delivery.alert.subject}: {delivery.error}")

        for charge in pass_through_settle(day=day, config=config):
            lines.append(
                f"pass-through {charge.budget.name} {charge.month:%Y-%m}: {charge.get_status_display()}"
                + (f" {charge.stripe_invoice_item_id}" if charge.stripe_invoice_item_id else "")
                + (f" ({charge.reason})" if charge.reason else "")
            )
            if charge.status == PassThroughCharge.Status.PENDING:
                failures += 1
        run.status = CostCheckRun.Status.PARTIAL if failures else CostCheckRun.Status.SUCCEEDED
        if failures:
            run.error = f"{failures} alert(s) or charge(s) not delivered; retried on the next run"
    except (CostwatchConfigError, AwsError) as exc:
        run.status = CostCheckRun.Status.FAILED
        run.error = str(exc)
        logger.warning("cost check %s failed: %s", run.pk, exc)
    except Exception:
        run.status = CostCheckRun.Status.FAILED
        run.error = traceback.format_exc()
        raise
    finally:
        if explorer is not None:
            run.ce_requests = explorer.counter.count
        lines.append(f"Cost Explorer requests: {run.ce_requests}")
        run.summary = "\n".join(lines)
        run.finish(run.status)
    return run


def run_totals(run: CostCheckRun) -> dict:
    return {
        "run": run.pk,
        "status": run.status,
        "date": run.checked_date.isoformat(),
        "ce_requests": run.ce_requests,
        "alerts_sent": run.alerts_sent,
        "month_to_date": str(run.month_to_date if run.month_to_date is not None else Decimal(0)),
        "error": run.error.strip().splitlines()[-1] if run.error.strip() else "",
    }
