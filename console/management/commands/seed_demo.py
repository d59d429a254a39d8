import os
import random
import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from core.commands import BaseCommand
from core.validation import row_validate
from metering.aggregation import usage_aggregate
from metering.ingest import usage_events_record, usage_events_validate
from metering.models import Meter, Price, UsageEvent
from metering.services import meter_create
from tenants.models import Tenant
from tenants.services import api_key_issue, tenant_create

DEMO_TENANTS = [
    # slug, name, plan, free allowance per meter and month
    ("acme", "Acme Analytics", Tenant.Plan.METERED, Decimal("0")),
    ("globex", "Globex Search", Tenant.Plan.METERED, Decimal("1000")),
    ("initech", "Initech Labs", Tenant.Plan.FREE, Decimal("10000")),
]
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
USAGE_DAYS = 7


class Command(BaseCommand):
    help = (
        "Create the demo data: an admin login and three tenants with API keys. "
        "Idempotent: what exists is left as it is."
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
            keys = self._tenants()
            self._meters()
        self.stdout.write(login)
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

    def _tenants(self) -> list[tuple[str, str]]:
        issued = []
        for slug, name, plan, allowance in DEMO_TENANTS:
            if Tenant.objects.filter(slug=slug).exists():
                continue
            tenant = tenant_create(
                name=name, slug=slug, plan=plan, monthly_free_allowance=allowance, source="seed_demo"
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
                    events.append({"id": f"demo-{hours_ago}-c{n}", "meter": "api_calls", "timestamp": stamp})
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
