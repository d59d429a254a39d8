"""Rows of stripe_sync (and of the dj-stripe mirror it reads) for tests."""

from decimal import Decimal

import factory
from django.utils import timezone
from djstripe.models import Customer, Invoice, Subscription

from metering.tests.factories import MeterFactory
from stripe_sync.models import (
    BillingNotification,
    CircuitBreaker,
    CreditGrant,
    ReconciliationItem,
    ReconciliationRun,
    ReportingBalance,
    StripeMeter,
    TenantSubscription,
    UsageReport,
    WebhookEvent,
)
from tenants.tests.factories import TenantFactory


class CustomerFactory(factory.django.DjangoModelFactory):
    """A dj-stripe Customer mirrored locally (no call to Stripe)."""

    class Meta:
        model = Customer

    id = factory.Sequence(lambda n: f"cus_test{n}")
    livemode = False
    stripe_data = factory.LazyAttribute(lambda customer: {"id": customer.id})


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A dj-stripe Invoice mirrored locally; pass its fields as they come from Stripe in `stripe_data`."""

    class Meta:
        model = Invoice

    id = factory.Sequence(lambda n: f"in_test{n}")
    customer = factory.SubFactory(CustomerFactory)
    livemode = False
    stripe_data = factory.LazyAttribute(lambda invoice: {"id": invoice.id})


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    id = factory.Sequence(lambda n: f"sub_test{n}")
    customer = factory.SubFactory(CustomerFactory)
    livemode = False
    stripe_data = factory.LazyAttribute(lambda subscription: {"id": subscription.id, "status": "active"})


class StripeMeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StripeMeter

    meter = factory.SubFactory(MeterFactory)
    event_name = factory.LazyAttribute(lambda row: row.meter.code)


class TenantSubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TenantSubscription

    tenant = factory.SubFactory(TenantFactory)
    subscription = factory.SubFactory(SubscriptionFactory)


class UsageReportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageReport

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    hour = factory.LazyFunction(lambda: timezone.now().replace(minute=0, second=0, microsecond=0))
    revision = 1
    identifier = factory.Sequence(lambda n: f"report-{n}")
    quantity = Decimal("1.5")
    value = 1
    customer_id = factory.LazyAttribute(lambda report: f"cus_{report.tenant.slug}")
    event_name = factory.LazyAttribute(lambda report: report.meter.code)
    timestamp = factory.LazyAttribute(lambda report: report.hour)


class WebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEvent

    stripe_id = factory.Sequence(lambda n: f"evt_test{n}")
    type = "invoice.paid"
    payload = factory.LazyFunction(dict)


class CircuitBreakerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CircuitBreaker

    name = "stripe"


class ReconciliationRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReconciliationRun

    started_at = factory.LazyFunction(timezone.now)
    trigger = "test"
    window_start = factory.LazyAttribute(lambda run: run.started_at)
    window_end = factory.LazyAttribute(lambda run: run.started_at)


def mirrored_invoice(
    customer, invoice_id: str, *, status: str, period_start: int, currency: str = "usd", **fields
):
    """A dj-stripe Invoice row as the mirror stores it: Stripe's fields in stripe_data."""
    return InvoiceFactory(
        id=invoice_id,
        customer=customer,
        livemode=False,
        stripe_data={
            "id": invoice_id,
            "status": status,
            "currency": currency,
            "period_start": period_start,
            **fields,
        },
    )


class ReportingBalanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReportingBalance

    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)


class BillingNotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingNotification

    key = factory.Sequence(lambda n: f"payment_succeeded:in_{n}")
    kind = BillingNotification.Kind.PAYMENT_SUCCEEDED
    tenant = factory.SubFactory(TenantFactory)
    subject = "Payment succeeded"
    payload = factory.LazyFunction(lambda: {"version": 1, "kind": "payment_succeeded"})


class ReconciliationItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReconciliationItem

    run = factory.SubFactory(ReconciliationRunFactory)
    tenant = factory.SubFactory(TenantFactory)
    meter = factory.SubFactory(MeterFactory)
    hour = factory.LazyFunction(lambda: timezone.now().replace(minute=0, second=0, microsecond=0))
    kind = ReconciliationItem.Kind.STRIPE_MISSING
    local_quantity = Decimal("2.5")
    sent_value = 2
    stripe_value = Decimal("0")


class CreditGrantFactory(factory.django.DjangoModelFactory):
    """A grant as recorded after Stripe made it (no call to Stripe)."""

    class Meta:
        model = CreditGrant

    tenant = factory.SubFactory(TenantFactory)
    customer_id = factory.Sequence(lambda n: f"cus_grant{n}")
    stripe_id = factory.Sequence(lambda n: f"credgr_test{n}")
    amount_minor = 5000
    currency = "usd"
    category = CreditGrant.Category.PROMOTIONAL
    reason = "Apology for the outage of 3 November"
    granted_by_name = "operator"
    status = CreditGrant.Status.ACTIVE
