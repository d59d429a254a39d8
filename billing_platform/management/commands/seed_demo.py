import os
import secrets
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from billing_platform.commands import BaseCommand
from tenants.models import Tenant
from tenants.services import api_key_issue, tenant_create

DEMO_TENANTS = [
    # slug, name, plan, free allowance per meter and month
    ("acme", "Acme Analytics", Tenant.Plan.METERED, Decimal("0")),
    ("globex", "Globex Search", Tenant.Plan.METERED, Decimal("1000")),
    ("initech", "Initech Labs", Tenant.Plan.FREE, Decimal("10000")),
]


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
        self.stdout.write(login)
        for slug, key in keys:
            self.stdout.write(f"tenant {slug}: new API key {key}")
        if not keys:
            self.stdout.write(
                "demo tenants already exist (their keys were shown when first created; "
                "`manage.py create_api_key SLUG` makes another)"
            )

    def _admin(self, username: str) -> str:
        password_file = settings.BASE_DIR / "var" / "demo-admin-password"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
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
