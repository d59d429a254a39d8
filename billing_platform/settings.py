"""Settings for the billing platform, read only from the environment.

With no variable set the project runs as the embedded demo: SQLite, no Redis (Celery uses a
filesystem broker), no Stripe or AWS keys. Every variable is listed in docs/configuration.md.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from core.api_schema import ERROR_SCHEMA
from core.env import RecordingEnv

BASE_DIR = Path(__file__).resolve().parent.parent

env = RecordingEnv()
# Every variable read below, its value and whether it came from the environment (`show_config`).
ENVIRONMENT_READS = env.reads

DEBUG = env.bool("DJANGO_DEBUG", default=True)

_INSECURE_DEMO_KEY = "django-insecure-demo-key-for-the-embedded-demo-only-never-in-production"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0")
    SECRET_KEY = _INSECURE_DEMO_KEY

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Django admin with the console's AdminSite as admin.site (console/sites.py).
    "console.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "djstripe",
    "outbound",
    "tenants",
    "metering",
    "apigateway",
    "stripe_sync",
    "costwatch",
    # The ground floor (commands, API errors, logging, metrics, money, charts, notifier) and the
    # roof (the operator console: admin site, dashboard, tenant page, reports, operator jobs).
    "core",
    "console",
]

MIDDLEWARE = [
    # First, so that every log line of the request (and its X-Request-ID answer) has the id.
    "core.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A bounded parser's ParseError escaping a non-DRF view under /api/ is a JSON 400, not a 500.
    "core.middleware.ApiInputErrorMiddleware",
]

ROOT_URLCONF = "billing_platform.urls"
WSGI_APPLICATION = "billing_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # Which Stripe the pages talk to: the demo's sandbox is labelled on every admin page.
                "stripe_sync.context_processors.stripe_status",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs web, worker and beat against one SQLite file: wait for locks instead of
    # failing, and take the write lock at BEGIN so two writers never deadlock on upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    # A health check is a SELECT 1 per request; behind a pooler or on a stable network it can go.
    DATABASES["default"].setdefault(
        "CONN_HEALTH_CHECKS", env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    )
# A PostgreSQL streaming replica for the reads that may lag (dashboard, usage API, reports), entered
# only through core.db_routing.lagging_reads(); its lag guard falls back to the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
REPLICA_MAX_LAG_SECONDS = env.float("REPLICA_MAX_LAG_SECONDS", default=10.0)
if REPLICA_MAX_LAG_SECONDS < 0:
    raise ImproperlyConfigured("REPLICA_MAX_LAG_SECONDS must be 0 or more")
if DATABASE_REPLICA_URL:
    _replica = env.db_url_config(DATABASE_REPLICA_URL)
    if "postgresql" not in DATABASES["default"]["ENGINE"] or "postgresql" not in _replica["ENGINE"]:
        raise ImproperlyConfigured("DATABASE_REPLICA_URL needs PostgreSQL, as DATABASE_URL")
    _replica_options = {**DATABASES["default"].get("OPTIONS", {}), **_replica.get("OPTIONS", {})}
    # An unreachable replica costs each process one bounded connect per lag check, not a TCP timeout.
    _replica_options.setdefault("connect_timeout", 3)
    DATABASES["replica"] = {
        **_replica,
        "OPTIONS": _replica_options,
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": DATABASES["default"]["CONN_HEALTH_CHECKS"],
        # Tests create no database on the replica: the alias opens the test database by its name
        # (on a standby of the test server, the primary's test database replayed).
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_ROUTERS = ["core.db_routing.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production: DJANGO_DEBUG=0) --------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- E-mail ---------------------------------------------------------------------------------
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
OPERATOR_EMAILS = env.list("OPERATOR_EMAILS", default=[])

# --- Redis and Celery -----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_DATA_DIR = Path(env.str("CELERY_DATA_DIR", default=str(BASE_DIR / "var" / "celery")))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # With acks_late, a task whose worker died is redelivered after this many seconds.
        # It must exceed the longest task run (hourly jobs finish in minutes), and we never
        # schedule with a countdown/ETA longer than this.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 30}
else:
    # The embedded demo: a real worker and beat, with messages passed through files instead of
    # Redis (see docs/configuration.md, "Periodic jobs without Redis").
    CELERY_BROKER_URL = "filesystem://localhost/"  # the host is ignored; naming one keeps kombu quiet
    CELERY_RESULT_BACKEND = None
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DATA_DIR / "queue"),
        "data_folder_out": str(CELERY_DATA_DIR / "queue"),
        "control_folder": str(CELERY_DATA_DIR / "control"),
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1800)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1500)
CELERY_RESULT_EXPIRES = 86_400
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Periodic tasks: every schedule of the platform, declared once ---------------------------
# `migrate` (post_migrate) and `manage.py sync_schedules` create each task missing from
# django-celery-beat (matched by name) with its schedule (core/schedules.py). A task that exists is
# never changed: operators edit, disable or re-time it in admin and that stays. Crontab fields left
# out are "*"; crontabs are in UTC. `kwargs` and `expire_seconds` are optional.
PERIODIC_TASKS = [
    {
        "name": "celery-beat-heartbeat",
        "task": "billing_platform.beat_heartbeat",  # core.beat.HEARTBEAT_TASK
        "interval": {"every": 60, "period": "seconds"},  # core.beat.HEARTBEAT_INTERVAL_SECONDS
        "expire_seconds": 60,
        "description": "Beat's heartbeat for /readyz (core/beat.py): a task that does nothing, every "
        "minute; disabling it makes /readyz report beat as down.",
    },
    {
        "name": "Aggregate usage (hourly)",
        "task": "metering.aggregate_usage",
        # Minute 2: events stamped in the last seconds of an hour have arrived by then.
        "crontab": {"minute": "2"},
        "description": "Aggregates every hour that received usage events since the last run.",
    },
    {
        "name": "Prune raw usage events (daily)",
        "task": "metering.prune_usage_events",
        "crontab": {"minute": "30", "hour": "3"},
        "kwargs": {"older_than_days": 45},
        "description": "Removes raw usage events older than 45 days once aggregated and reported "
        "(PostgreSQL: drops whole days' partitions); aggregates stay.",
    },
    {
        "name": "Maintain the raw-event store (hourly)",
        "task": "metering.maintain_event_store",
        "crontab": {"minute": "5"},
        "description": "Creates the coming days' raw-event partitions and drops idempotency key "
        "generations older than the previous one (PostgreSQL; nothing on SQLite).",
    },
    {
        "name": "Consume usage queues (every minute)",
        "task": "metering.consume_usage_queues",
        "interval": {"every": 60, "period": "seconds"},
        # A run that waited this long behind others is dropped: the next one a minute later does its work.
        "expire_seconds": 60,
        "kwargs": {"max_messages": 1000, "wait_seconds": 5},
        "description": "Receives seed 000's BILLING and ONBOARD events from every enabled usage queue "
        "(SQS; metering/eventbus.py) until it is empty; failed messages stay for the queue's redrive.",
    },
    {
        "name": "Report usage to Stripe (hourly)",
        "task": "stripe_sync.report_usage",
        # Minute 10: after the hourly aggregation (minute 2) has finished.
        "crontab": {"minute": "10"},
        "description": "Writes outbox rows for changed hourly aggregates, sends them as Stripe meter events.",
    },
    {
        "name": "Reconcile usage with Stripe (nightly)",
        "task": "stripe_sync.reconcile_usage",
        "crontab": {"minute": "30", "hour": "3"},
        "description": "Compares local aggregates, what was sent and Stripe's meter event summaries.",
    },
    {
        "name": "Requeue stale Stripe webhook events",
        "task": "stripe_sync.requeue_stale_webhook_events",
        "interval": {"every": 10, "period": "minutes"},
        "description": "Events stored but not processed for 10 minutes (a lost task) are queued again.",
    },
    {
        "name": "Check AWS costs (daily)",
        "task": "costwatch.check_costs",
        # 06:00 UTC: Cost Explorer has most of yesterday's costs by then (it refreshes several times a day).
        "crontab": {"minute": "0", "hour": "6"},
        "description": "Reads yesterday's and the month's AWS costs from Cost Explorer, judges every "
        "budget, sends alerts and bills pass-through overages.",
    },
    {
        "name": "Send the daily usage report (daily)",
        "task": "billing_platform.send_daily_report",
        # 07:00 UTC: an hour after the 06:00 cost check, so yesterday's AWS cost is in the report.
        "crontab": {"minute": "0", "hour": "7"},
        "description": "E-mails yesterday's usage, estimated revenue, failures and AWS cost to "
        "OPERATOR_EMAILS, once per day.",
    },
    {
        "name": "Sync API Gateway usage plans (daily)",
        "task": "apigateway.sync_usage_plans",
        "crontab": {"minute": "15", "hour": "5"},
        "description": "Puts every tenant's API Gateway key in exactly the usage plan of its plan "
        "(suspended: none), repairing drift; does nothing without APIGATEWAY_USAGE_PLAN_* settings.",
    },
    {
        "name": "Import API Gateway usage (hourly)",
        "task": "apigateway.import_usage",
        # Minute 50: today's growing count lands before the next hour's aggregation (minute 2).
        "crontab": {"minute": "50"},
        "description": "Imports today's and yesterday's request counts per API key (GetUsage) as usage "
        "events of APIGATEWAY_USAGE_METER, only what grew since the last run; off without the settings.",
    },
    {
        "name": "Send due outgoing webhooks (every minute)",
        "task": "outbound.deliver_due_webhooks",
        "interval": {"every": 60, "period": "seconds"},
        "expire_seconds": 60,
        "description": "Sends webhook deliveries that are due: retries on their schedule and any whose "
        "task was lost (the rows, not the broker, are the truth).",
    },
]

# --- Cache (rate limits): shared through Redis when there is one -----------------------------
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "bp",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Stripe ---------------------------------------------------------------------------------
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
# Tests and the demo (scripts/run-demo.sh) point this at the suite's local Stripe server; production
# leaves Stripe's own (`check --deploy` refuses a local one: stripe_sync/checks.py).
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_LIVE_MODE = STRIPE_API_KEY.startswith(("sk_live_", "rk_live_"))
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_API_KEY
STRIPE_LIVE_SECRET_KEY = STRIPE_API_KEY if STRIPE_LIVE_MODE else ""
# Meter events go to their own host at Stripe; anywhere else (tests) the one base serves both.
STRIPE_METER_EVENTS_API_BASE = env.str(
    "STRIPE_METER_EVENTS_API_BASE",
    default=(
        "https://meter-events.stripe.com" if STRIPE_API_BASE == "https://api.stripe.com" else STRIPE_API_BASE
    ),
)
STRIPE_TIMEOUT = env.float("STRIPE_TIMEOUT", default=10.0)  # seconds, every call
# Client-side ceiling on calls per second (Stripe: 25/s in test mode, 100/s live).
STRIPE_MAX_REQUESTS_PER_SECOND = env.float(
    "STRIPE_MAX_REQUESTS_PER_SECOND", default=100.0 if STRIPE_LIVE_MODE else 25.0
)
# The circuit breaker around Stripe: this many failed calls in a row open it for this long.
STRIPE_CIRCUIT_FAILURES = env.int("STRIPE_CIRCUIT_FAILURES", default=5)
STRIPE_CIRCUIT_OPEN_SECONDS = env.int("STRIPE_CIRCUIT_OPEN_SECONDS", default=300)
# A reporting sender holds the (tenant, meter) pairs it sends for this long, renewed while it works;
# a sender that died is taken over after it.
STRIPE_REPORTING_LEASE_SECONDS = env.int("STRIPE_REPORTING_LEASE_SECONDS", default=60)
# Hosts that Checkout's success and cancel URLs, and the Customer Portal's return URL, may point at.
CHECKOUT_ALLOWED_HOSTS = env.list("CHECKOUT_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
# Checkout shows Stripe's "Add promotion code" field (the codes themselves are made in Stripe).
CHECKOUT_PROMOTION_CODES = env.bool("CHECKOUT_PROMOTION_CODES", default=False)
# The Customer Portal configuration (bpc_...) that portal sessions use; empty: the account's default.
STRIPE_PORTAL_CONFIGURATION = env.str("STRIPE_PORTAL_CONFIGURATION", default="")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
DJSTRIPE_USE_NATIVE_JSONFIELD = True

# --- AWS (credentials and AWS_ENDPOINT_URL come from boto3's own chain) ----------------------
COSTWATCH_SNS_TOPIC_ARN = env.str("COSTWATCH_SNS_TOPIC_ARN", default="")
# Costwatch: the daily Cost Explorer check (costwatch/conf.py validates these with one clear line).
COSTWATCH_METRIC = env.str("COSTWATCH_METRIC", default="UnblendedCost")
COSTWATCH_TENANT_TAG_KEY = env.str("COSTWATCH_TENANT_TAG_KEY", default="tenant")
COSTWATCH_CURRENCY = env.str("COSTWATCH_CURRENCY", default="USD")
COSTWATCH_ANOMALY_FACTOR = env.str("COSTWATCH_ANOMALY_FACTOR", default="3")
COSTWATCH_ANOMALY_MIN_DAILY_COST = env.str("COSTWATCH_ANOMALY_MIN_DAILY_COST", default="1")
COSTWATCH_RESTATEMENT_DAYS = env.int("COSTWATCH_RESTATEMENT_DAYS", default=3)
COSTWATCH_AWS_TIMEOUT = env.float("COSTWATCH_AWS_TIMEOUT", default=20.0)  # seconds, read; connect 5
BILLING_EVENTS_SNS_TOPIC_ARN = env.str("BILLING_EVENTS_SNS_TOPIC_ARN", default="")

# --- API Gateway usage plans (apigateway; seed 003) -------------------------------------------
# The usage plan each billing plan's API keys belong to; empty: keys of that plan are in no usage plan
# (and placement is off when both are empty).
APIGATEWAY_USAGE_PLAN_FREE = env.str("APIGATEWAY_USAGE_PLAN_FREE", default="")
APIGATEWAY_USAGE_PLAN_METERED = env.str("APIGATEWAY_USAGE_PLAN_METERED", default="")
# The meter that API Gateway's daily request counts (GetUsage) are imported into; empty: no import.
APIGATEWAY_USAGE_METER = env.str("APIGATEWAY_USAGE_METER", default="")

# --- Outgoing webhooks (outbound) -----------------------------------------------------------
# Plain http:// endpoint URLs are refused unless this is true (default: only in DEBUG, for the demo).
WEBHOOKS_ALLOW_HTTP = env.bool("WEBHOOKS_ALLOW_HTTP", default=DEBUG)
# An endpoint whose every delivery failed for this many days, with no success, is disabled.
WEBHOOKS_DISABLE_AFTER_DAYS = env.int("WEBHOOKS_DISABLE_AFTER_DAYS", default=5)
WEBHOOKS_TIMEOUT = env.float("WEBHOOKS_TIMEOUT", default=15.0)  # seconds to read an answer; connect 5

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.authentication.IsActiveTenant"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Billing platform API",
    "DESCRIPTION": "Usage ingestion, read-back and provisioning. Authenticate with "
    "`Authorization: Api-Key <key>` or `Authorization: Bearer <key>` (a tenant key or a platform key).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI's files come from the installed sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The API's one error shape (core.api_schema.ERROR_SCHEMA), referenced by every operation.
    "APPEND_COMPONENTS": {"schemas": {"Error": ERROR_SCHEMA}},
    # Three models have a `status`: name each choice set, so the schema's enums are stable.
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "WebhookEventStatusEnum": "stripe_sync.models.WebhookEvent.Status",
    },
}
# Requests per API key and window on the ingestion endpoint ("100/s", "3000/m"; "0" for none).
INGEST_RATE_LIMIT = env.str("INGEST_RATE_LIMIT", default="100/s")
# Seconds an API key (and its tenant's status) is remembered per process; revocation elsewhere
# takes effect within this time. 0: look the key up on every request.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
# Re-stamp a key's last_used_at at most this often, so authentication is not a write per request.
API_KEY_LAST_USED_RESOLUTION_SECONDS = env.int("API_KEY_LAST_USED_RESOLUTION_SECONDS", default=60)

# --- Logging and metrics --------------------------------------------------------------------
# JSON lines in production, text in the demo; each line has request id, tenant and task id.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it is a 404 (in DEBUG,
# loopback callers may read it without a token).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "text": {"()": "core.logging.TextFormatter"},
    },
    "filters": {"context": {"()": "core.logging.ContextFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # boto's INFO lines ("Found credentials in environment variables") and stripe-python's two INFO
    # lines per request are noise; the platform records its Stripe and AWS calls itself.
    "loggers": {
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "stripe": {"level": "WARNING"},
    },
}
