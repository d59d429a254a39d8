from django.urls import path

from stripe_sync import api, selfservice_api, webhook_views

urlpatterns = [
    path("stripe/webhook", webhook_views.stripe_webhook, name="stripe-webhook"),
    path("billing/checkout", api.checkout_create, name="billing-checkout"),
    path("billing/portal", selfservice_api.billing_portal_create, name="billing-portal"),
    path("billing/upcoming", selfservice_api.billing_upcoming, name="billing-upcoming"),
    path("billing/credits", selfservice_api.billing_credits, name="billing-credits"),
    path("invoices", selfservice_api.invoice_list, name="invoice-list"),
    path("tenants/<str:ref>/onboard", api.tenant_onboard_view, name="tenant-onboard"),
]
