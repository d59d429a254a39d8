"""stripe_sync's models, one module per concern; import them from here."""

from stripe_sync.models.credits import CreditGrant  # noqa: F401
from stripe_sync.models.customers import StripeMeter, TenantSubscription  # noqa: F401
from stripe_sync.models.reporting import (  # noqa: F401
    CircuitBreaker,
    ReconciliationItem,
    ReconciliationRun,
    ReportedHour,
    ReportingBalance,
    UsageReport,
)
from stripe_sync.models.webhooks import *  # noqa: F403
