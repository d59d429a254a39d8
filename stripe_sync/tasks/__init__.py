"""stripe_sync's Celery tasks (autodiscovered through this package), one module per concern."""
from stripe_sync.tasks import webhooks  # noqa: F401
from stripe_sync.tasks import reporting  # noqa: F401
from stripe_sync.tasks import sync  # noqa: F401
