from django.apps import AppConfig


class StripeSyncConfig(AppConfig):
    name = "stripe_sync"
    verbose_name = "Stripe sync"

    def ready(self):
        import stripe
        from django.conf import settings

        # dj-stripe calls Stripe through stripe-python's module-level client; point it at the
        # configured base (tests: the suite's local Stripe server). dj-stripe's own
        # STRIPE_API_HOST setting is not used because its deploy check flags any value.
        stripe.api_base = settings.STRIPE_API_BASE
