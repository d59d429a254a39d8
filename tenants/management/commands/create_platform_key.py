from django.core.management.base import CommandError

from core.api_scopes import EVENTS_WRITE, SCOPES, USAGE_READ
from core.commands import BaseCommand
from tenants.services import TenantError, platform_key_issue

# What a backend that sends usage and reads it back needs; provisioning (tenants:write) and webhook
# endpoints (webhooks:write) are granted only when asked for.
DEFAULT_SCOPES = [EVENTS_WRITE, USAGE_READ]


def scopes_argument(value: str) -> list[str]:
    scopes = [scope.strip() for scope in value.split(",") if scope.strip()]
    return list(SCOPES) if scopes == ["all"] else scopes


class Command(BaseCommand):
    help = (
        "Create a platform key for the SaaS's own backend (names tenants itself, limited to its scopes). "
        "The key is the last line printed, shown once."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="a name for the key (max 50 characters)")
        parser.add_argument(
            "--scopes",
            type=scopes_argument,
            default=DEFAULT_SCOPES,
            help=f"comma-separated, from {', '.join(SCOPES)}; or all (default: {','.join(DEFAULT_SCOPES)})",
        )

    def handle(self, *args, name, scopes, **options):
        try:
            issued = platform_key_issue(name=name, scopes=scopes)
        except TenantError as exc:
            raise CommandError(str(exc)) from None
        api_key = issued.api_key
        self.stdout.write(f"platform key id: {api_key.pk} ({api_key.name}); key prefix {api_key.prefix}")
        self.stdout.write(f"scopes: {', '.join(api_key.scopes)}")
        self.stdout.write("Platform key (shown once, store it now):")
        self.stdout.write(issued.secret)
