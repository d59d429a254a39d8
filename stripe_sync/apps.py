from django.apps import AppConfig


class StripeSyncConfig(AppConfig):
    name = "stripe_sync"
    verbose_name = "Stripe sync"

    def ready(self):
        import stripe

        from core.commands import command_errors
        from core.metrics import business_gauges
        from stripe_sync import (
            checks,  # noqa: F401 - registers the deploy check of STRIPE_API_BASE
            metrics,
        )
        from stripe_sync.catalog import stripe_error_message
        from stripe_sync.client import StripeNotConfigured, configure_module_api

        # dj-stripe calls Stripe through stripe-python's module-level client; point it at the
        # configured base (tests: the suite's local Stripe server). dj-stripe's own
        # STRIPE_API_HOST setting is not used because its deploy check flags any value.
        configure_module_api()

        # A management command ends on these with one line (core/commands.py): STRIPE_API_KEY unset
        # or malformed (StripeKeyMalformed is a StripeNotConfigured), and Stripe's own errors.
        command_errors.register(StripeNotConfigured)
        command_errors.register(stripe.StripeError, stripe_error_message)
        command_errors.register(
            stripe.AuthenticationError,
            lambda exc: f"Stripe refused STRIPE_API_KEY: {stripe_error_message(exc)}",
        )

        # Seed 000's ONBOARD events name a Stripe subscription (item): metering's event-bus consumer
        # links it through this function (metering/eventbus.py; metering never imports stripe_sync).
        from metering.eventbus import subscription_links
        from stripe_sync.eventbus import tenant_subscription_link_from_bus

        subscription_links.register(tenant_subscription_link_from_bus)

        # Raw events of an hour whose report is still on its way stay (metering retention).
        from metering.aggregation import retention_holds
        from stripe_sync.retention import earliest_unreported_hour

        if earliest_unreported_hour not in retention_holds:
            retention_holds.append(earliest_unreported_hour)

        # The reporting outbox, the webhook inbox and the circuit breaker on /metrics (core/metrics.py).
        for group in (metrics.usage_reports, metrics.webhook_events, metrics.circuit_breakers):
            business_gauges.register(group)
