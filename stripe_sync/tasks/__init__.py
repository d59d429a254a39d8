"""stripe_sync's Celery tasks (autodiscovered through this package), one module per concern."""

from stripe_sync.tasks import (
    reporting,  # noqa: F401
    sync,  # noqa: F401
    webhooks,  # noqa: F401
)
