"""Print the effective configuration: every environment variable the platform reads, its value and
where the value came from, secrets masked.

The variables the settings read are recorded as they are read (`settings.ENVIRONMENT_READS`, see
core/env.py); the ones settings.py reads only in another configuration (production's
security settings in the demo, say) are found in its source and shown as not used. Variables read
by libraries or single commands (boto3's AWS chain, seed_demo, prometheus-client) are listed here.
"""

import os
import re
import sys
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from core.commands import BaseCommand

# Read outside settings.py: (name, who reads it, what applies when it is unset).
OTHER_VARIABLES = [
    ("AWS_ACCESS_KEY_ID", "boto3", "boto3's credential chain (profile, instance role)"),
    ("AWS_SECRET_ACCESS_KEY", "boto3", "boto3's credential chain"),
    ("AWS_SESSION_TOKEN", "boto3", "none"),
    ("AWS_DEFAULT_REGION", "boto3", "boto3's configuration files"),
    ("AWS_REGION", "boto3", "AWS_DEFAULT_REGION"),
    ("AWS_PROFILE", "boto3", "the default profile"),
    ("AWS_ENDPOINT_URL", "boto3", "AWS's own endpoints"),
    ("PROMETHEUS_MULTIPROC_DIR", "prometheus-client", "per-process metrics"),
    ("DEMO_ADMIN_USER", "seed_demo", "admin"),
    ("DEMO_ADMIN_PASSWORD", "seed_demo", "generated"),
]

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY$|ACCESS_KEY_ID$")
_ENV_CALL = re.compile(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")


def mask_secret(value) -> str:
    """`sk_t…(32 chars)`: enough to tell which key is set, never enough to use it."""
    text = _plain(value)
    if not text:
        return "(empty)"
    shown = text[:4] if len(text) >= 16 else ""
    return f"{shown}…({len(text)} chars)"


def mask_url_password(value: str) -> str:
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return mask_secret(value)
    if not password:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:****@{host}"))


def display_value(name: str, value) -> str:
    if _SECRET_NAME.search(name):
        return mask_secret(value)
    text = _plain(value)
    if "://" in text:
        return mask_url_password(text)
    return text if text else "(empty)"


def _plain(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _names_in_settings_source() -> list[str]:
    # SETTINGS_MODULE is None while settings are overridden (tests); the environment still names it.
    module = sys.modules.get(settings.SETTINGS_MODULE or os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    path = getattr(module, "__file__", None)
    if not path:
        return []
    with open(path, encoding="utf-8") as source:
        return list(dict.fromkeys(_ENV_CALL.findall(source.read())))


def config_rows(*, environ) -> list[tuple[str, str, str]]:
    """(name, source, value shown) for every variable, in the order settings read them."""
    reads = getattr(settings, "ENVIRONMENT_READS", {})
    rows = [
        (
            read.name,
            "environment" if read.from_environment else "default",
            display_value(read.name, read.value),
        )
        for read in reads.values()
    ]
    for name in _names_in_settings_source():
        if name not in reads:
            source = "environment, not used here" if name in environ else "not used in this configuration"
            rows.append((name, source, display_value(name, environ[name]) if name in environ else "-"))
    for name, reader, fallback in OTHER_VARIABLES:
        if name in environ:
            rows.append((name, f"environment ({reader})", display_value(name, environ[name])))
        else:
            rows.append((name, f"unset ({reader})", fallback))
    return rows


class Command(BaseCommand):
    help = "Print every environment variable the platform reads, its effective value and its source."

    def handle(self, *args, **options):
        rows = config_rows(environ=os.environ)
        name_width = max(len(name) for name, _, _ in rows)
        source_width = max(len(source) for _, source, _ in rows)
        for name, source, value in rows:
            self.stdout.write(f"{name:<{name_width}}  {source:<{source_width}}  {value}")
