"""stripe_sync's Celery tasks (autodiscovered through this package), one module per concern."""
