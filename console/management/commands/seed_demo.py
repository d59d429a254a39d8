import hashlib
import hmac
import json
import os
import random
import secrets
import time
import urllib.request
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from console.models import OperatorJob
from console.operator_jobs import operator_job_run
from core.commands import BaseCommand
from core.money import format_minor
from core.validation import row_validate
from costwatch.budgets import budget_create
from costwatch.conf import costwatch_config
from costwatch.cost_explorer import CostRow, CostWindow
from costwatch.costs import daily_costs_store, month_start
from costwatch.models import Budget, CostCheckRun
from costwatch.services import cost_check_run
from metering.aggregation import usage_aggregate
from metering.allowances import plan_allowance_set
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import Meter, PlanMeterAllowance, Price, UsageEvent, UsageThreshold
from metering.services import meter_create
from metering.thresholds import usage_threshold_create
from outbound.events import ALL_EVENTS
from outbound.models import WebhookEndpoint
from outbound.services import webhook_endpoint_create, webhook_endpoint_update
from stripe_sync.checkout import checkout_session_create
from stripe_sync.client import (
    NOT_CONFIGURED_REASON,
    stripe_client,
    stripe_configured,
    stripe_is_local_sandbox,
)
from stripe_sync.credits import credit_grant_create
from stripe_sync.models import CreditGrant, ReconciliationRun, WebhookEvent
from stripe_sync.onboarding import tenant_onboard
from stripe_sync.reconciliation import usage_reconcile
from stripe_sync.reporting import usage_reports_prepare
from stripe_sync.sender import usage_reports_send
from stripe_sync.webhooks import webhook_event_process, webhook_event_receive, webhook_payload_verify
from tenants.models import Tenant
from tenants.services import api_key_issue, tenant_create

DEMO_TENANTS = [
    # slug, name, plan, free allowance per meter and month, external id (the SaaS's own customer id)
    ("acme", "Acme Analytics", Tenant.Plan.METERED, Decimal("0"), "crm-1001"),
    ("globex", "Globex Search", Tenant.Plan.METERED, Decimal("1000"), "crm-1002"),
    ("initech", "Initech Labs", Tenant.Plan.FREE, Decimal("10000"), "crm-1003"),
]
# Usage thresholds (outgoing usage.threshold_crossed events): tenant, meter, kind, value.
DEMO_THRESHOLDS = [
    ("acme", "api_calls", UsageThreshold.Kind.ABSOLUTE, Decimal("1000")),
    ("initech", "api_calls", UsageThreshold.Kind.PERCENT_OF_ALLOWANCE, Decimal("80")),
]
# The demo's stand-in for the SaaS's own app (scripts/webhook_receiver.py, started by make run).
DEMO_RECEIVER_DESCRIPTION = "Demo receiver (make run): scripts/webhook_receiver.py"
DEMO_METERS = [
    # code, aggregation, unique property, name, unit
    ("api_calls", Meter.Aggregation.COUNT, "", "API calls", "call"),
    ("storage_gb", Meter.Aggregation.SUM, "", "Storage", "GB-hour"),
    ("active_users", Meter.Aggregation.UNIQUE_COUNT, "user_id", "Active users", "user-hour"),
]
DEMO_PRICES = {
    # meter: (model, unit_amount in cents, package size, tiers)
    "api_calls": (
        "graduated",
        "0",
        1,
        [
            {"up_to": 10000, "unit_amount": "0.1", "flat_amount": "0"},
            {"up_to": None, "unit_amount": "0.05", "flat_amount": "0"},
        ],
    ),
    "storage_gb": ("per_unit", "0.5", 1, []),
    "active_users": ("package", "100", 10, []),
}
# Per plan and meter: included units per month, hard limit, what happens at it (metering.allowances).
DEMO_PLAN_ALLOWANCES = [
    (Tenant.Plan.FREE, "api_calls", Decimal("10000"), Decimal("12000"), PlanMeterAllowance.AtLimit.REFUSE),
    (Tenant.Plan.FREE, "storage_gb", Decimal("500"), None, PlanMeterAllowance.AtLimit.REPORT),
    (Tenant.Plan.METERED, "api_calls", Decimal("1000"), None, PlanMeterAllowance.AtLimit.REPORT),
]
# Promotional credit at Stripe (billing credit grants) for an onboarded tenant: slug, cents, reason.
DEMO_CREDIT = ("acme", 2500, "Welcome credit (demo data)")
USAGE_DAYS = 7
DEMO_REGIONS = ("eu-west-1", "us-east-1", "eu-west-1")  # two thirds of the calls in Europe
# Onboarded to the Stripe sandbox by the seed; initech (free) subscribes through Checkout instead, so its
# plan changes by webhook as a customer's would.
ONBOARDED = ("acme", "globex")
CHECKOUT_TENANT = "initech"
# AWS cost per day by tenant tag ("" = untagged, unattributed) and service, in USD, before noise.
DEMO_COSTS = {
    "acme": {
        "Amazon Elastic Compute Cloud - Compute": "2.8",
        "Amazon Simple Storage Service": "0.6",
        "AWS Lambda": "0.3",
    },
    "globex": {"Amazon Elastic Compute Cloud - Compute": "1.4", "Amazon Relational Database Service": "0.9"},
    "initech": {"Amazon Elastic Compute Cloud - Compute": "0.5", "Amazon Simple Storage Service": "0.1"},
    "": {"AmazonCloudWatch": "0.4", "Amazon Virtual Private Cloud": "0.7"},
}
DEMO_BUDGETS = [
    # name, tenant slug (None: the whole account), amount in USD, pass-through
    ("AWS account (monthly)", None, Decimal("300"), False),
    ("Acme infrastructure", "acme", Decimal("150"), False),
    ("Globex pass-through", "globex", Decimal("90"), True),
]


class Command(BaseCommand):
    help = (
        "Create the demo data: an admin login, three tenants with API keys and a week of usage; with the "
        "demo's local Stripe sandbox, their onboarding, usage reports, webhooks and a reconciliation; a "
        "month of AWS costs with budgets, a cost check and its alerts; operator jobs. Idempotent: what "
        "exists is left as it is."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DEMO_ADMIN_USER", "admin"))
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even with DJANGO_DEBUG=0 (it creates a superuser)",
        )

    def handle(self, *args, username, force, **options):
        if not settings.DEBUG and not force:
            raise CommandError("refusing to seed demo data with DJANGO_DEBUG=0; pass --force")
        with transaction.atomic():
            login = self._admin(username)
            receiver = self._webhook_receiver()
            keys = self._tenants()
            self._meters()
            self._plan_allowances()
            self._thresholds()
        self.stdout.write(login)
        if receiver:
            self.stdout.write(receiver)
        for slug, key in keys:
            self.stdout.write(f"tenant {slug}: new API key {key}")
        if not keys:
            self.stdout.write(
                "demo tenants already exist (their keys were shown when first created; "
                "`manage.py create_api_key SLUG` makes another)"
            )
        events = self._usage()
        if events:
            run = usage_aggregate(trigger="seed_demo")
            self.stdout.write(
                f"demo usage: {events} events over {USAGE_DAYS} days, {run.hours_aggregated} hours aggregated"
            )
        if not stripe_configured():
            self.stdout.write(f"{NOT_CONFIGURED_REASON}: onboarding, reports and webhooks skipped")
        elif not stripe_is_local_sandbox():
            # Demo tenants are never sent to a real Stripe account, test mode included.
            self.stdout.write(
                "Stripe is not the demo's local sandbox: onboarding, reports and webhooks skipped"
            )
        else:
            self._stripe()
        self._costs()
        self._jobs(username)
        if stripe_configured() and stripe_is_local_sandbox():
            # What the steps since changed at Stripe (the pass-through invoice item, ...).
            self.stdout.write(f"stripe: {self._webhooks()} later webhook event(s) delivered and processed")

    def _admin(self, username: str) -> str:
        password_file = settings.BASE_DIR / "var" / "demo-admin-password"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            # --username is outside input: a name the model refuses is one line, not a DataError.
            row_validate(user_model(username=username), exclude=["password"])
            password = os.environ.get("DEMO_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user_model.objects.create_superuser(username=username, email="", password=password)
            if not os.environ.get("DEMO_ADMIN_PASSWORD"):
                _remember(password_file, password)
            return f"admin login: {username} / {password} (created)"
        for candidate in (os.environ.get("DEMO_ADMIN_PASSWORD"), _recall(password_file)):
            if candidate and user.check_password(candidate):
                return f"admin login: {username} / {candidate}"
        return f"admin login: {username} (password unchanged since it was set)"

    def _webhook_receiver(self) -> str:
        """With make run's receiver (DEMO_WEBHOOK_URL), an endpoint for every event type pointed at
        it, and its signing secret in var/demo-webhook-secret, where the receiver reads it."""
        url = os.environ.get("DEMO_WEBHOOK_URL")
        if not url:
            return ""
        endpoint = WebhookEndpoint.objects.filter(description=DEMO_RECEIVER_DESCRIPTION).first()
        if endpoint is None:
            endpoint = webhook_endpoint_create(
                url=url, event_types=[ALL_EVENTS], description=DEMO_RECEIVER_DESCRIPTION
            )
        elif endpoint.url != url:  # the receiver's port is new on every make run
            webhook_endpoint_update(endpoint=endpoint, url=url)
        secret_file = settings.BASE_DIR / "var" / "demo-webhook-secret"
        _remember(secret_file, endpoint.secret)
        return f"outgoing webhooks: every event type to {url} (the demo receiver verifies each one)"

    def _thresholds(self) -> None:
        for slug, code, kind, value in DEMO_THRESHOLDS:
            tenant, meter = Tenant.objects.get(slug=slug), Meter.objects.get(code=code)
            if not UsageThreshold.objects.filter(tenant=tenant, meter=meter).exists():
                usage_threshold_create(tenant=tenant, meter=meter, kind=kind, value=value)

    def _tenants(self) -> list[tuple[str, str]]:
        issued = []
        for slug, name, plan, allowance, external_id in DEMO_TENANTS:
            if Tenant.objects.filter(slug=slug).exists():
                continue
            tenant = tenant_create(
                name=name,
                slug=slug,
                plan=plan,
                monthly_free_allowance=allowance,
                external_id=external_id,
                source="seed_demo",
            )
            issued.append((slug, api_key_issue(tenant=tenant, name="demo").secret))
        return issued

    def _meters(self) -> None:
        for code, aggregation, prop, name, unit in DEMO_METERS:
            meter = Meter.objects.filter(code=code).first() or meter_create(
                code=code, aggregation=aggregation, unique_property=prop, name=name, unit=unit
            )
            model, unit_amount, package_size, tiers = DEMO_PRICES[code]
            for plan in Tenant.Plan.values:
                Price.objects.get_or_create(
                    meter=meter,
                    plan=plan,
                    defaults={
                        "model": model,
                        "unit_amount": Decimal(unit_amount),
                        "package_size": package_size,
                        "tiers": tiers,
                    },
                )

    def _plan_allowances(self) -> None:
        for plan, code, included, limit, at_limit in DEMO_PLAN_ALLOWANCES:
            meter = Meter.objects.get(code=code)
            if not PlanMeterAllowance.objects.filter(plan=plan, meter=meter).exists():
                plan_allowance_set(
                    plan=plan, meter=meter, included=included, hard_limit=limit, at_limit=at_limit
                )

    def _usage(self) -> int:
        """A week of hourly usage per demo tenant, only for tenants that have none yet."""
        now = timezone.now()
        total = 0
        for slug, *_ in DEMO_TENANTS:
            tenant = Tenant.objects.get(slug=slug)
            if UsageEvent.objects.filter(tenant=tenant).exists():
                continue
            rng = random.Random(slug)  # noqa: S311 - demo figures, not secrets
            events = []
            for hours_ago in range(USAGE_DAYS * 24, 0, -1):
                moment = now - timedelta(hours=hours_ago)
                # Business hours are busier: a day-shaped curve with noise.
                load = 1 + 3 * (8 <= moment.hour < 20)
                for n in range(rng.randint(2, 6) * load):
                    stamp = (moment + timedelta(seconds=rng.randint(0, 3599))).isoformat()
                    # The region lets `GET /api/v1/usage?group_by=region` split the calls.
                    region = DEMO_REGIONS[n % len(DEMO_REGIONS)]
                    events.append(
                        {
                            "id": f"demo-{hours_ago}-c{n}",
                            "meter": "api_calls",
                            "timestamp": stamp,
                            "properties": {"region": region},
                        }
                    )
                    events.append(
                        {
                            "id": f"demo-{hours_ago}-u{n}",
                            "meter": "active_users",
                            "timestamp": stamp,
                            "properties": {"user_id": f"user-{rng.randint(1, 4 * load)}"},
                        }
                    )
                events.append(
                    {
                        "id": f"demo-{hours_ago}-s",
                        "meter": "storage_gb",
                        "timestamp": moment.isoformat(),
                        "quantity": str(Decimal(rng.randint(100, 400)) / 10),
                    }
                )
            for start in range(0, len(events), 1000):
                valid = usage_events_validate(payload={"events": events[start : start + 1000]}, now=now)
                total += usage_events_record(tenant=tenant, events=valid, now=now).accepted
        return total

    # --- Stripe (the demo's local sandbox) -----------------------------------------------------

    def _stripe(self) -> None:
        for slug in ONBOARDED:
            tenant = Tenant.objects.get(slug=slug)
            if tenant.stripe_customer_id:
                continue  # onboarded by an earlier run: left as it is
            result = tenant_onboard(tenant=tenant, actor="seed_demo")
            subscription = f", subscription {result.subscription.id}" if result.subscription else ""
            self.stdout.write(f"stripe: {slug} onboarded (customer {result.customer.id}{subscription})")
        tenant = Tenant.objects.get(slug=CHECKOUT_TENANT)
        if tenant.stripe_customer_id is None:
            # The tenant's customer pays at Checkout (the sandbox completes it with a test card); the
            # webhooks below then move it to the metered plan, as Stripe's would.
            session = checkout_session_create(
                tenant=tenant, success_url="http://127.0.0.1/checkout/done", cancel_url="http://127.0.0.1/"
            )
            _sandbox_control(f"/_test/checkout_sessions/{session.id}/complete", {"card": "visa"})
            self.stdout.write(f"stripe: {tenant.slug} paid at Checkout ({session.id})")
        delivered = self._webhooks()
        self.stdout.write(f"stripe: {delivered} webhook event(s) delivered and processed")
        slug, cents, reason = DEMO_CREDIT
        tenant = Tenant.objects.get(slug=slug)
        if not CreditGrant.objects.filter(tenant=tenant).exists():
            grant = credit_grant_create(
                tenant=tenant,
                amount_minor=cents,
                currency="usd",
                category=CreditGrant.Category.PROMOTIONAL,
                reason=reason,
                actor="seed_demo",
            )
            amount = format_minor(cents, "usd")
            self.stdout.write(f"stripe: {slug} granted {amount} of credit ({grant.status})")
        prepared = usage_reports_prepare()
        sent = usage_reports_send()
        self.stdout.write(
            f"stripe: usage reports: {prepared.reports} written to the outbox, {sent.sent} sent"
        )
        if not ReconciliationRun.objects.exists():
            run = usage_reconcile(trigger="seed_demo")
            self.stdout.write(
                f"stripe: reconciliation {run.get_status_display().lower()}: {run.hours_checked} hour(s) "
                f"checked, {run.differences} difference(s)"
            )

    def _webhooks(self) -> int:
        """Every event the sandbox recorded, signed and delivered to the platform's webhook service as
        the endpoint receives it (verify, store once, process); events already stored are skipped."""
        page = stripe_client().v1.events.list(params={"limit": 100})
        events = json.loads(page.last_response.body)["data"]  # Stripe's JSON as sent, not StripeObjects
        known = set(
            WebhookEvent.objects.filter(stripe_id__in=[e["id"] for e in events]).values_list(
                "stripe_id", flat=True
            )
        )
        delivered = 0
        for event in sorted(events, key=lambda e: (e["created"], e["id"])):
            if event["id"] in known:
                continue
            body = json.dumps(event).encode()
            payload = webhook_payload_verify(
                body=body,
                signature=_signature(body, settings.STRIPE_WEBHOOK_SECRET),
                secret=settings.STRIPE_WEBHOOK_SECRET,
            )
            received = webhook_event_receive(payload=payload, enqueue=False)
            webhook_event_process(event_id=received.event.pk)
            delivered += 1
        return delivered

    # --- AWS costs ---------------------------------------------------------------------------------

    def _costs(self) -> None:
        """From the first day of last month to yesterday: costs stored as the daily check stores them,
        the budgets, and one check (judging budgets, raising alerts, billing pass-through)."""
        config = costwatch_config()
        today = timezone.now().date()
        explorer = DemoCostExplorer(currency=config.currency)
        window = explorer.daily_costs(start=month_start(month_start(today) - timedelta(days=1)), end=today)
        rows = daily_costs_store(window=window, metric=config.metric)
        self.stdout.write(f"aws: {rows} daily cost rows from {window.start} to {today - timedelta(days=1)}")
        for name, slug, amount, pass_through in DEMO_BUDGETS:
            if not Budget.objects.filter(name=name).exists():
                budget_create(
                    name=name,
                    amount=amount,
                    thresholds="80,100",
                    currency=config.currency,
                    tenant=Tenant.objects.get(slug=slug) if slug else None,
                    pass_through=pass_through,
                    markup_percent=Decimal("10") if pass_through else Decimal(0),
                )
        if not CostCheckRun.objects.exists():
            run = cost_check_run(trigger="seed_demo", explorer=explorer)
            self.stdout.write(
                f"aws: cost check {run.get_status_display().lower()}: {run.alerts_sent} alert(s) sent"
                + (f" ({run.error.strip().splitlines()[-1]})" if run.error.strip() else "")
            )

    # --- Operator jobs -----------------------------------------------------------------------------

    def _jobs(self, username: str) -> None:
        """Two jobs an operator would start from a tenant's page, run here instead of by a worker."""
        if OperatorJob.objects.exists():
            return
        user = get_user_model().objects.get(username=username)
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        jobs = [(OperatorJob.Kind.REAGGREGATE, "globex", {
            "since": (now - timedelta(hours=3)).isoformat(), "until": now.isoformat()
        })]  # fmt: skip
        if stripe_configured() and stripe_is_local_sandbox():
            jobs.append((OperatorJob.Kind.STRIPE_RESYNC, "acme", {}))
        for kind, slug, params in jobs:
            job = OperatorJob.objects.create(
                kind=kind,
                tenant=Tenant.objects.get(slug=slug),
                requested_by=user,
                params=params,
                task_id=str(uuid.uuid4()),
                progress="Waiting for a worker",
            )
            job = operator_job_run(job_id=job.pk)
            self.stdout.write(f"operator job: {job.get_kind_display()} for {slug}: {job.progress}")


class DemoCostExplorer:
    """Cost Explorer's answers for the demo, which has no AWS account: the same figures every time for
    a day (DEMO_COSTS with noise seeded by the day), no forecast (the check then forecasts linearly)."""

    def __init__(self, *, currency: str):
        self.currency = currency
        self.counter = SimpleNamespace(count=0)

    def daily_costs(self, *, start: date, end: date) -> CostWindow:
        window = CostWindow(start=start, end=end, pages=1)
        day = start
        while day < end:
            rng = random.Random(day.isoformat())  # noqa: S311 - demo figures, not secrets
            # Globex's database grows: its cost climbs through the month.
            growth = Decimal(1) + Decimal(day.day) / 30
            for tag, services in DEMO_COSTS.items():
                for service, base in services.items():
                    amount = Decimal(base) * Decimal(rng.uniform(0.8, 1.2)).quantize(Decimal("0.0001"))
                    if tag == "globex":
                        amount *= growth
                    window.rows[(day, service, tag)] = CostRow(
                        day=day, service=service, tag_value=tag, amount=amount.quantize(Decimal("0.0001")),
                        currency=self.currency,
                    )  # fmt: skip
            day += timedelta(days=1)
        return window

    def forecast(self, *, start: date, end: date, expression: dict | None) -> tuple[Decimal | None, str]:
        return None, "the demo has no Cost Explorer: linear forecast"


def _signature(body: bytes, secret: str) -> str:
    """Stripe's `Stripe-Signature` header for `body`: t=<time>,v1=<HMAC-SHA256 of "<time>.<body>">."""
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def _sandbox_control(path: str, data: dict) -> dict:
    """A test control of the demo's local Stripe sandbox (tests/stripe_server), e.g. paying at Checkout."""
    request = urllib.request.Request(  # noqa: S310 - STRIPE_API_BASE on this machine, checked by the caller
        settings.STRIPE_API_BASE.rstrip("/") + path,
        data=json.dumps(data).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=settings.STRIPE_TIMEOUT) as response:  # noqa: S310
        return json.loads(response.read())


def _remember(path: Path, password: str) -> None:
    # Kept beside the demo database so later runs can print the login again; demo only.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password)
    path.chmod(0o600)


def _recall(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
