from django.apps import AppConfig


class StripeSyncConfig(AppConfig):
    name = "stripe_sync"
    verbose_name = "Stripe sync"

    def ready(self):
        from stripe_sync.client import configure_module_api

        # dj-stripe calls Stripe through stripe-python's module-level client; point it at the
        # configured base (tests: the suite's local Stripe server). dj-stripe's own
        # STRIPE_API_HOST setting is not used because its deploy check flags any value.
        configure_module_api()
