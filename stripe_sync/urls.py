from django.urls import path

from stripe_sync import api, webhook_views

urlpatterns = [
    path("stripe/webhook", webhook_views.stripe_webhook, name="stripe-webhook"),
    path("billing/checkout", api.checkout_create, name="billing-checkout"),
    path("tenants/<str:ref>/onboard", api.tenant_onboard_view, name="tenant-onboard"),
]
