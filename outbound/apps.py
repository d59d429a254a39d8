from django.apps import AppConfig


class OutboundConfig(AppConfig):
    name = "outbound"
    verbose_name = "Outgoing webhooks"

    def ready(self):
        from core.metrics import business_gauges
        from outbound import metrics

        business_gauges.register(metrics.webhook_deliveries)
