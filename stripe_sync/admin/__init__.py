"""stripe_sync's admin, one module per concern."""
