"""What an operator does with the inbox: admin list, detail and Replay; `handle_stripe_event`."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError
from django.urls import reverse
from django.utils.html import escape

from stripe_sync.models import BillingNotification, WebhookEvent
from stripe_sync.tests.factories import WebhookEventFactory
from stripe_sync.tests.webhook_support import deliver, onboarded_tenant
from stripe_sync.webhooks import webhook_event_process
from tenants.models import Tenant, TenantChange
from tenants.tests.support import run_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def attached(local_stripe, tenant) -> dict:
    """A free, onboarded tenant that just attached a card at Stripe: the event Stripe sent."""
    customer_id = onboarded_tenant(tenant)
    local_stripe.create_payment_method(customer_id, default=True)
    return local_stripe.events("payment_method.attached")[-1]


def test_admin_lists_and_shows_events_with_their_payload(
    admin_client, client, attached, django_capture_on_commit_callbacks
):
    event = deliver(client, attached, django_capture_on_commit_callbacks)
    changelist = reverse("admin:stripe_sync_webhookevent_changelist")
    listing = admin_client.get(changelist, {"q": event.stripe_id})
    assert listing.status_code == 200
    assert event.stripe_id in listing.text
    assert admin_client.get(changelist, {"status__exact": "failed"}).context["cl"].result_count == 0

    detail = admin_client.get(reverse("admin:stripe_sync_webhookevent_change", args=[event.pk]))
    assert detail.status_code == 200
    assert "&quot;payment_method.attached&quot;" in detail.text  # the payload, pretty-printed
    assert escape(event.result) in detail.text
    assert 'name="stripe_id"' not in detail.text  # read-only

    notifications = admin_client.get(reverse("admin:stripe_sync_billingnotification_changelist"))
    assert notifications.status_code == 200
    assert escape(BillingNotification.objects.get().subject) in notifications.text


def test_replay_from_admin_requeues_and_logs(
    admin_client, admin_user, client, attached, tenant, django_capture_on_commit_callbacks
):
    event = deliver(client, attached, django_capture_on_commit_callbacks)
    Tenant.objects.filter(pk=tenant.pk).update(plan=Tenant.Plan.FREE)  # someone undid it by hand

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = admin_client.post(
            reverse("admin:stripe_sync_webhookevent_changelist"),
            {"action": "replay", "_selected_action": [event.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "1 event(s) queued" in response.text
    assert len(queued) == 1
    event.refresh_from_db()
    assert event.status == "received"
    log = LogEntry.objects.get(object_id=str(event.pk))
    assert (log.user, log.get_change_message()) == (
        admin_user,
        f"Replayed Stripe event {event.stripe_id} (queued for processing).",
    )

    replayed = webhook_event_process(event_id=event.pk)  # what the queued task runs
    assert (replayed.status, replayed.attempts) == ("processed", 2)
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    sources = TenantChange.objects.filter(tenant=tenant, field="plan").values_list("source", flat=True)
    assert list(sources) == [event.stripe_id, event.stripe_id]


def test_admin_cannot_add_or_edit_events(admin_client):
    assert admin_client.get(reverse("admin:stripe_sync_webhookevent_add")).status_code == 403


def test_handle_stripe_event_stores_and_processes_a_saved_event(attached, tenant, tmp_path):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(attached))

    lines = run_command("handle_stripe_event", str(path))

    assert lines[0] == f"{attached['id']} payment_method.attached: stored"
    assert lines[-1].startswith(f"{attached['id']}: processed - {tenant.slug}: plan free -> metered")
    tenant.refresh_from_db()
    assert tenant.plan == Tenant.Plan.METERED
    assert WebhookEvent.objects.get().status == "processed"

    again = run_command("handle_stripe_event", str(path))
    assert again[-1].startswith(f"{attached['id']}: already processed")
    replayed = run_command("handle_stripe_event", str(path), "--replay")
    assert replayed[-1].startswith(f"{attached['id']}: processed - {tenant.slug} already metered")
    assert WebhookEvent.objects.count() == 1


def test_handle_stripe_event_reports_a_failure_in_one_line(attached, tmp_path, local_stripe):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(attached))
    local_stripe.fail_next(3, status=500, path=f"/v1/payment_methods/{attached['data']['object']['id']}")
    with pytest.raises(CommandError, match=rf"^{attached['id']}: failed: APIError: "):
        run_command("handle_stripe_event", str(path))
    assert WebhookEvent.objects.get().status == "failed"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{oops", "not valid JSON"),
        ('{"object": "charge"}', "not a Stripe event"),
    ],
)
def test_handle_stripe_event_refuses_a_bad_file_in_one_line(tmp_path, content, message):
    path = tmp_path / "event.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message) as error:
        run_command("handle_stripe_event", str(path))
    assert "\n" not in str(error.value)
    assert WebhookEvent.objects.count() == 0


def test_events_whose_task_was_lost_are_queued_again(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from conftest import beat_task
    from stripe_sync import webhooks
    from stripe_sync.models import WebhookEvent

    queued = []
    monkeypatch.setattr(webhooks, "webhook_event_enqueue", lambda *, event_id: queued.append(event_id))
    old = timezone.now() - timedelta(minutes=11)
    lost = WebhookEventFactory(stripe_id="evt_lost", type="invoice.paid", payload={})
    stuck = WebhookEventFactory(stripe_id="evt_stuck", type="invoice.paid", payload={}, status="processing")
    fresh = WebhookEventFactory(stripe_id="evt_fresh", type="invoice.paid", payload={})
    done = WebhookEventFactory(stripe_id="evt_done", type="invoice.paid", payload={}, status="processed")
    WebhookEvent.objects.filter(pk__in=[lost.pk, stuck.pk, done.pk]).update(updated_at=old)

    assert webhooks.webhook_events_requeue_stale() == 2
    assert sorted(queued) == sorted([lost.pk, stuck.pk])
    assert fresh.pk not in queued
    task = beat_task("stripe_sync.requeue_stale_webhook_events")
    assert (task.interval.every, task.interval.period) == (10, "minutes")
