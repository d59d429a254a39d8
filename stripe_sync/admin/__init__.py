"""stripe_sync's admin, one module per concern."""
from stripe_sync.admin import webhooks  # noqa: F401
from stripe_sync.admin import customers  # noqa: F401
from stripe_sync.admin import reporting  # noqa: F401
