from django.urls import path

from outbound import api

urlpatterns = [
    path("webhook-endpoints", api.webhook_endpoints, name="webhook-endpoints"),
    path("webhook-endpoints/<int:endpoint_id>", api.webhook_endpoint, name="webhook-endpoint"),
]
