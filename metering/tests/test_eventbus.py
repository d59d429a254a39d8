"""Seed 000's event bus: BILLING and ONBOARD events from SQS (EventBridge, SNS and raw envelopes), on the
moto server over HTTP. Linking a Stripe subscription at ONBOARD: stripe_sync/tests/test_eventbus.py."""

import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from conftest import beat_task
from core.aws import aws_client
from metering.eventbus import subscription_links
from metering.models import UsageEvent, UsageQueue
from metering.tasks import consume_usage_queues
from metering.tests.support import MAX_RECEIVES, consume, summary, usage_queue
from tenants.models import Tenant, TenantChange
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def seed_tenant(db):
    """Seed 000 names tenants by its own id: the tenant's external id."""
    return TenantFactory(slug="tenant-zero", name="Tenant Zero", external_id="Tenant0")


@pytest.fixture
def queue(aws):
    return usage_queue()


def eventbridge_event(
    detail: dict, *, kind: str = "BILLING", moment: datetime | None = None, **fields
) -> dict:
    """An event as an EventBridge rule's SQS target delivers it."""
    moment = moment or timezone.now()
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": kind,
        "source": "seed-000",
        "account": "123456789012",
        "time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
        **fields,
    }


def events_of(tenant) -> list[tuple[str, Decimal]]:
    return list(UsageEvent.objects.filter(tenant=tenant).order_by("id").values_list("event_id", "quantity"))


# --- Envelopes ------------------------------------------------------------------------------------


def test_an_eventbridge_rule_target_delivers_billing_events_and_a_redelivery_changes_nothing(
    queue, seed_tenant, api_calls
):
    events = aws_client("events")
    events.create_event_bus(Name="BillingEventBridge")
    events.put_rule(
        Name="billing-to-sqs",
        EventBusName="BillingEventBridge",
        EventPattern=json.dumps({"detail-type": ["BILLING", "ONBOARD"]}),
    )
    events.put_targets(
        Rule="billing-to-sqs", EventBusName="BillingEventBridge", Targets=[{"Id": "usage", "Arn": queue.arn}]
    )
    # Exactly what seed 000's README puts on the bus.
    put = events.put_events(
        Entries=[
            {
                "Detail": json.dumps({"TenantID": "Tenant0", "Quantity": 5}),
                "DetailType": "BILLING",
                "EventBusName": "BillingEventBridge",
                "Source": "command-line-test",
            }
        ]
    )
    event_id = put["Entries"][0]["EventId"]
    [delivered] = queue.peek()
    body = json.loads(delivered["Body"])

    out, _ = consume(queue.url)

    assert out == summary(received=1, processed=1)
    assert events_of(seed_tenant) == [(f"eventbridge:{event_id}", Decimal(5))]
    stored = UsageEvent.objects.get(tenant=seed_tenant)
    assert stored.timestamp == datetime.strptime(body["time"], "%Y-%m-%dT%H:%M:%S%z")
    assert stored.meter == api_calls
    assert queue.count() == 0

    # SQS delivers at least once: the same message again (a consumer that died before deleting it).
    queue.send(delivered["Body"])
    out, _ = consume(queue.url)

    assert out == summary(received=1, duplicates=1)
    assert events_of(seed_tenant) == [(f"eventbridge:{event_id}", Decimal(5))]
    assert queue.count() == 0


def test_an_sns_notification_of_a_raw_event_is_keyed_by_its_message_id(queue, seed_tenant, storage):
    sns = aws_client("sns")
    topic = sns.create_topic(Name="billing")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue.arn)  # raw message delivery off
    message_id = sns.publish(TopicArn=topic, Message=json.dumps({"TenantID": "Tenant0", "Quantity": "2.5"}))[
        "MessageId"
    ]

    out, _ = consume(queue.url, "storage_gb")

    assert out == summary(received=1, processed=1)
    assert events_of(seed_tenant) == [(f"sns:{message_id}", Decimal("2.5"))]


def test_an_sns_notification_of_an_eventbridge_event_is_keyed_by_the_event(queue, seed_tenant, api_calls):
    event = eventbridge_event({"TenantID": "Tenant0", "Quantity": 3})
    sns = aws_client("sns")
    topic = sns.create_topic(Name="billing")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue.arn)
    sns.publish(TopicArn=topic, Message=json.dumps(event))
    # The same event also reached the queue straight from its rule: still one usage event.
    queue.send(event)

    out, _ = consume(queue.url)

    assert out == summary(received=2, processed=1, duplicates=1)
    assert events_of(seed_tenant) == [(f"eventbridge:{event['id']}", Decimal(3))]


def test_a_raw_message_is_keyed_by_its_sqs_message_id_and_timed_now(queue, seed_tenant, api_calls):
    before = timezone.now()
    message_id = queue.send({"TenantID": "Tenant0", "Quantity": 7})

    out, _ = consume(queue.url)

    assert out == summary(received=1, processed=1)
    assert events_of(seed_tenant) == [(f"sqs:{message_id}", Decimal(7))]
    assert UsageEvent.objects.get().timestamp >= before


def test_a_billing_event_may_name_the_tenant_by_its_slug(queue, seed_tenant, api_calls):
    queue.send({"TenantID": "tenant-zero", "Quantity": 1})
    consume(queue.url)
    assert len(events_of(seed_tenant)) == 1


# --- ONBOARD without a subscription ------------------------------------------------------------------


def test_onboard_creates_the_tenant_by_its_external_id_once(queue, api_calls):
    event = eventbridge_event({"TenantID": "Acme-42", "ExternalSubscriptionIdentifier": None}, kind="ONBOARD")
    queue.send(event)
    queue.send(event)  # redelivered
    queue.send({"TenantID": "Acme-42", "ExternalSubscriptionIdentifier": None})  # a raw one, later

    out, _ = consume(queue.url)

    assert out == summary(received=3, processed=3)
    tenant = Tenant.objects.get(external_id="Acme-42")
    assert (tenant.name, tenant.slug, tenant.plan, tenant.status) == ("Acme-42", "acme-42", "free", "active")
    [created] = TenantChange.objects.filter(tenant=tenant)
    assert (created.field, created.source) == (TenantChange.Field.CREATED, f"eventbridge:{event['id']}")

    # Its billing events are recorded from then on.
    queue.send({"TenantID": "Acme-42", "Quantity": 2})
    consume(queue.url)
    assert [quantity for _, quantity in events_of(tenant)] == [Decimal(2)]


def test_onboard_gives_a_new_tenant_a_free_slug(queue, api_calls):
    TenantFactory(slug="acme")
    queue.send(
        eventbridge_event({"TenantID": "ACME", "ExternalSubscriptionIdentifier": None}, kind="ONBOARD")
    )
    consume(queue.url)
    assert Tenant.objects.get(external_id="ACME").slug == "acme-2"


def test_onboard_with_an_identifier_and_no_stripe_link_stays_in_the_queue(queue, api_calls, monkeypatch):
    monkeypatch.setattr(subscription_links, "_link", None)  # as without the stripe_sync app
    queue.send({"TenantID": "Acme-42", "ExternalSubscriptionIdentifier": "si_123"})

    out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert "needs Stripe (the stripe_sync app)" in err
    assert queue.count() == 1
    assert Tenant.objects.filter(external_id="Acme-42").exists()  # found again on the next try


# --- Messages that cannot be processed ------------------------------------------------------------


def _bad_messages(tenant_id: str) -> list[tuple[object, str]]:
    old = timezone.now() - timedelta(days=36)
    return [
        ("not json at all", "the message body is not JSON"),
        ([1, 2], "the message body is not a JSON object"),
        ({"TenantID": "nobody", "Quantity": 1}, "no tenant with external id or slug 'nobody'"),
        ({"TenantID": tenant_id, "Quantity": -1}, "Quantity must not be negative"),
        ({"TenantID": tenant_id, "Quantity": "lots"}, "Quantity"),
        ({"TenantID": tenant_id, "Quantity": None}, "Quantity is required in a BILLING event: a number"),
        ({"TenantID": tenant_id}, "has neither"),
        ({"TenantID": tenant_id, "Quantity": 1, "ExternalSubscriptionIdentifier": None}, "not both"),
        ({"Quantity": 1}, "TenantID is required"),
        (
            eventbridge_event({"TenantID": tenant_id, "Quantity": 1}, moment=old),
            "Stripe does not accept usage",
        ),
        (
            eventbridge_event({"TenantID": tenant_id, "Quantity": 1}, kind="REFUND"),
            "neither BILLING nor ONBOARD",
        ),
        (eventbridge_event({"TenantID": tenant_id}), "Quantity is required"),
        (
            eventbridge_event(
                {"TenantID": tenant_id, "ExternalSubscriptionIdentifier": "cus_1"}, kind="ONBOARD"
            ),
            "must be a Stripe subscription item id (si_...)",
        ),
        (
            {"Type": "Notification", "MessageId": "m-1", "Message": "{"},
            "the SNS notification's Message is not JSON",
        ),
    ]


@pytest.mark.parametrize("index", range(len(_bad_messages("x"))))
def test_a_message_that_cannot_be_processed_stays_in_the_queue_and_is_counted(
    queue, seed_tenant, api_calls, index, caplog
):
    body, reason = _bad_messages("Tenant0")[index]
    configured = UsageQueue.objects.create(url=queue.url, meter=api_calls)
    message_id = queue.send(body)

    with caplog.at_level(logging.WARNING, logger="metering.eventbus"):
        out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert reason in err
    assert queue.count() == 1
    assert not UsageEvent.objects.exists()
    configured.refresh_from_db()
    assert (configured.received, configured.processed, configured.failed) == (1, 0, 1)
    assert configured.last_error.startswith(f"message {message_id}: ")
    assert reason in configured.last_error
    [line] = [r.getMessage() for r in caplog.records if r.name == "metering.eventbus"]
    assert message_id in line
    assert "left for redrive" in line


def test_a_suspended_tenants_events_stay_in_the_queue(queue, seed_tenant, api_calls):
    Tenant.objects.filter(pk=seed_tenant.pk).update(status=Tenant.Status.SUSPENDED)
    queue.send({"TenantID": "Tenant0", "Quantity": 1})
    queue.send({"TenantID": "Tenant0", "ExternalSubscriptionIdentifier": None})

    out, err = consume(queue.url)

    assert out == summary(received=2, failed=2)
    assert "tenant tenant-zero is suspended" in err
    assert queue.count() == 2


def test_a_poison_message_goes_to_the_dead_letter_queue_after_its_receives(queue, seed_tenant, api_calls):
    configured = UsageQueue.objects.create(url=queue.url, meter=api_calls, visibility_timeout=0)
    queue.send("{not json")
    queue.send({"TenantID": "Tenant0", "Quantity": 1})

    # Visible again at once (visibility timeout 0): each run receives the poison message once more.
    runs = [
        consume(queue.url, "api_calls", "--visibility-timeout", "0", "--once")[0]
        for _ in range(MAX_RECEIVES + 1)
    ]

    assert runs == [
        summary(received=2, processed=1, failed=1),
        summary(received=1, failed=1),
        summary(received=0),  # SQS moved it to the dead-letter queue on this receive
    ]
    [dead] = queue.dead_letters()
    assert dead["Body"] == "{not json"
    assert queue.count() == 0
    configured.refresh_from_db()
    assert (configured.received, configured.processed, configured.failed) == (3, 1, 2)
    assert "not JSON" in configured.last_error
    assert len(events_of(seed_tenant)) == 1


def test_an_unexpected_error_leaves_the_message_and_logs_one_record_with_its_traceback(
    queue, seed_tenant, api_calls, monkeypatch, caplog
):
    def outage(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("metering.eventbus.usage_events_record", outage)
    message_id = queue.send({"TenantID": "Tenant0", "Quantity": 1})

    with caplog.at_level(logging.WARNING, logger="metering.eventbus"):
        out, err = consume(queue.url)

    assert out == summary(received=1, failed=1)
    assert err == f"last failure: message {message_id}: unexpected RuntimeError: the database went away"
    assert queue.count() == 1
    [record] = [r for r in caplog.records if r.name == "metering.eventbus"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert message_id in record.getMessage()


def test_a_failure_within_a_run_is_not_received_again_in_that_run(queue, seed_tenant, api_calls):
    queue.send("{not json")
    out, _ = consume(queue.url, "api_calls", "--visibility-timeout", "0", "--max-messages", "50")
    assert out == summary(received=2, failed=2)  # seen twice, then the run stops


# --- The command ----------------------------------------------------------------------------------


def test_once_receives_one_batch(queue, seed_tenant, api_calls):
    for quantity in range(1, 13):
        queue.send({"TenantID": "Tenant0", "Quantity": quantity})
    out, _ = consume(queue.url, "api_calls", "--once")
    assert out == summary(received=10, processed=10)
    out, _ = consume(queue.url, "api_calls", "--max-messages", "1")
    assert out == summary(received=1, processed=1)
    assert queue.count() == 1


def test_the_command_counts_on_the_configured_queue_of_its_url(queue, seed_tenant, api_calls, storage):
    configured = UsageQueue.objects.create(url=queue.url, meter=storage)
    queue.send({"TenantID": "Tenant0", "Quantity": 1})
    consume(queue.url, "api_calls")  # --meter wins for this run
    configured.refresh_from_db()
    assert (configured.received, configured.processed, configured.last_polled_at is not None) == (1, 1, True)
    assert UsageEvent.objects.get().meter == api_calls


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--meter", "nope"), "unknown meter 'nope' (meters: api_calls)"),
        (("--meter", "api_calls", "--wait", "21"), "argument --wait"),
        (("--meter", "api_calls", "--max-messages", "0"), "argument --max-messages"),
    ],
)
def test_the_command_refuses_bad_arguments_in_one_line(queue, api_calls, args, message):
    with pytest.raises(CommandError, match=re.escape(message)) as raised:
        call_command("consume_usage_queue", queue.url, *args)
    assert "\n" not in str(raised.value)


def test_the_command_names_a_queue_that_does_not_exist(aws, api_calls):
    url = f"{aws}/123456789012/none"
    with pytest.raises(CommandError, match=f"no SQS queue {url}$"):
        consume(url)


def test_the_command_refuses_what_is_not_a_queue_url(api_calls):
    with pytest.raises(CommandError, match="'not a url' is not an SQS queue URL"):
        consume("not a url")


def test_the_command_says_when_aws_has_no_credentials(queue, api_calls, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CommandError, match="AWS credentials not found"):
        consume(queue.url)


# --- The periodic task ----------------------------------------------------------------------------


def test_the_periodic_task_consumes_every_enabled_queue(aws, seed_tenant, api_calls, storage):
    first, second, off = usage_queue("first"), usage_queue("second"), usage_queue("off")
    UsageQueue.objects.create(url=first.url, meter=api_calls)
    UsageQueue.objects.create(url=second.url, meter=storage)
    UsageQueue.objects.create(url=off.url, meter=api_calls, enabled=False)
    missing = UsageQueue.objects.create(url=f"{aws}/123456789012/gone", meter=api_calls)
    first.send({"TenantID": "Tenant0", "Quantity": 1})
    second.send({"TenantID": "Tenant0", "Quantity": "0.5"})
    second.send("oops")
    off.send({"TenantID": "Tenant0", "Quantity": 9})

    outcome = consume_usage_queues(max_messages=100, wait_seconds=0)

    assert outcome == {
        first.url: summary(received=1, processed=1),
        second.url: summary(received=2, processed=1, failed=1),
        missing.url: f"poll failed: no SQS queue {missing.url}",
    }
    assert sorted((e.meter.code, e.quantity) for e in UsageEvent.objects.select_related("meter")) == [
        ("api_calls", Decimal(1)),
        ("storage_gb", Decimal("0.5")),
    ]
    assert off.count() == 1
    rows = {q.url: q for q in UsageQueue.objects.all()}
    assert (rows[second.url].received, rows[second.url].failed) == (2, 1)
    assert rows[missing.url].last_error == f"poll failed: no SQS queue {missing.url}"
    assert rows[off.url].last_polled_at is None


def test_the_periodic_task_is_declared_every_minute():
    task = beat_task("metering.consume_usage_queues")
    assert (task.interval.every, task.interval.period) == (60, "seconds")
    assert task.enabled


# --- Admin ------------------------------------------------------------------------------------------


def test_the_admin_lists_counts_and_last_error_and_consumes_on_demand(
    admin_client, queue, seed_tenant, api_calls
):
    configured = UsageQueue.objects.create(url=queue.url, meter=api_calls)
    queue.send({"TenantID": "Tenant0", "Quantity": 4})
    queue.send({"TenantID": "nobody", "Quantity": 1})
    changelist = reverse("admin:metering_usagequeue_changelist")

    response = admin_client.post(
        changelist, {"action": "consume_now", "_selected_action": [configured.pk]}, follow=True
    )

    assert response.status_code == 200
    text = response.content.decode()
    assert summary(received=2, processed=1, failed=1) in text
    assert "no tenant with external id or slug &#x27;nobody&#x27;" in text
    assert [quantity for _, quantity in events_of(seed_tenant)] == [Decimal(4)]

    admin_client.post(changelist, {"action": "disable", "_selected_action": [configured.pk]})
    configured.refresh_from_db()
    assert not configured.enabled
