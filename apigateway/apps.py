from django.apps import AppConfig


class ApiGatewayConfig(AppConfig):
    name = "apigateway"
    verbose_name = "API Gateway usage plans"

    def ready(self):
        from apigateway.services import UsagePlansNotConfigured, tenant_change_placement
        from apigateway.usage_import import UsageImportNotConfigured
        from core.commands import command_errors
        from tenants.services import tenant_change_listeners

        # A plan, status or key id change (wherever it is made) moves the tenant's API Gateway key
        # after commit; tenants imports nothing of this app (tenants/services.py).
        tenant_change_listeners.register("apigateway.usage_plan_placement", tenant_change_placement)
        command_errors.register(UsagePlansNotConfigured)
        command_errors.register(UsageImportNotConfigured)

        # Keys out of place (failed, pending) on /metrics (core/metrics.py).
        from apigateway.metrics import usage_plan_placements
        from core.metrics import business_gauges

        business_gauges.register(usage_plan_placements)
