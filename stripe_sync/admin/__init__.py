"""stripe_sync's admin, one module per concern."""

from stripe_sync.admin import (
    credits,  # noqa: F401
    customers,  # noqa: F401
    reporting,  # noqa: F401
    webhooks,  # noqa: F401
)
