"""The peers' real SDKs against a live server: `lago-python-client` and `openmeter` (pinned in
requirements/dev.txt) pointed at /compat/ send events unchanged; the rows they leave, the answers
they parse and the errors they raise are what a Lago or OpenMeter user would see.

One test per SDK (a live server needs a transactional database, which is slow to set up)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from corehttp.exceptions import ClientAuthenticationError, HttpResponseError
from django.utils import timezone
from lago_python_client.client import Client as LagoClient
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import BatchEvent, Event
from openmeter import Client as OpenMeterClient
from openmeter.models import Event as CloudEvent

from metering.models import UsageEvent
from metering.tests.factories import MeterFactory
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key, issue_platform_key

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def setup(settings):
    settings.INGEST_RATE_LIMIT = "0"
    acme = TenantFactory(slug="acme", external_id="sub_acme")
    TenantFactory(slug="globex", external_id="sub_globex")
    MeterFactory(code="tokens", aggregation="sum", value_property="tokens")
    MeterFactory(code="api_calls", aggregation="count")
    return {"platform": issue_platform_key("events:write"), "acme": issue_key(acme)}


def rows():
    return sorted(
        (e.tenant.slug, e.meter.code, e.event_id, e.quantity)
        for e in UsageEvent.objects.select_related("tenant", "meter")
    )


def test_the_lago_python_client_creates_and_batches_events(live_server, setup):
    client = LagoClient(api_key=setup["platform"], api_url=f"{live_server.url}/compat/lago/", max_retries=0)
    moment = timezone.now().replace(microsecond=0) - timedelta(minutes=10)
    created = client.events.create(
        Event(
            transaction_id="tx-1",
            external_subscription_id="sub_acme",
            code="tokens",
            timestamp=int(moment.timestamp()),
            properties={"tokens": 1200, "model": "small"},
        )
    )
    assert (created.transaction_id, created.external_subscription_id, created.code) == (
        "tx-1",
        "sub_acme",
        "tokens",
    )
    assert datetime.fromisoformat(created.timestamp) == moment
    assert created.properties == {"tokens": 1200, "model": "small"}

    # A batch mixing tenants (by external id and by slug), a decimal string timestamp, a count meter.
    assert (
        client.events.batch_create(
            BatchEvent(
                events=[
                    Event(
                        transaction_id="tx-2",
                        external_subscription_id="globex",
                        code="tokens",
                        timestamp=f"{moment.timestamp():.3f}",
                        properties={"tokens": "2.5"},
                    ),
                    Event(transaction_id="tx-3", external_subscription_id="sub_acme", code="api_calls"),
                ]
            )
        )
        is None
    )

    with pytest.raises(LagoApiError) as duplicate:
        client.events.create(
            Event(
                transaction_id="tx-1",
                external_subscription_id="sub_acme",
                code="tokens",
                properties={"tokens": 1},
            )
        )
    assert duplicate.value.status_code == 422
    assert duplicate.value.response["error_details"] == {"transaction_id": ["value_already_exist"]}

    with pytest.raises(LagoApiError) as invalid:
        client.events.batch_create(
            BatchEvent(
                events=[
                    Event(
                        transaction_id="tx-4",
                        external_subscription_id="sub_acme",
                        code="tokens",
                        properties={"tokens": 1},
                    ),
                    Event(
                        transaction_id="tx-5",
                        external_subscription_id="sub_acme",
                        code="tokens",
                        properties={"other": 1},
                    ),
                    Event(transaction_id="tx-6", external_subscription_id="nobody", code="nope"),
                ]
            )
        )
    assert invalid.value.status_code == 422
    details = invalid.value.response["error_details"]
    assert set(details) == {"1", "2"}
    assert "takes the quantity from it" in details["1"]["properties.tokens"][0]
    assert details["2"] == {
        "external_subscription_id": ["no tenant with external id or slug 'nobody'"],
        "code": ["unknown meter 'nope'"],
    }

    # A tenant's own key: its own subscription only.
    own = LagoClient(api_key=setup["acme"], api_url=f"{live_server.url}/compat/lago/", max_retries=0)
    assert (
        own.events.create(
            Event(transaction_id="tx-7", external_subscription_id="acme", code="api_calls")
        ).transaction_id
        == "tx-7"
    )
    with pytest.raises(LagoApiError) as other:
        own.events.create(
            Event(transaction_id="tx-8", external_subscription_id="sub_globex", code="api_calls")
        )
    assert other.value.status_code == 403
    with pytest.raises(LagoApiError) as unauthenticated:
        LagoClient(api_key="wrong.key", api_url=f"{live_server.url}/compat/lago/").events.create(
            Event(transaction_id="tx-9", external_subscription_id="acme", code="api_calls")
        )
    assert unauthenticated.value.status_code == 401

    assert rows() == [
        ("acme", "api_calls", "tx-3", Decimal(1)),
        ("acme", "api_calls", "tx-7", Decimal(1)),
        ("acme", "tokens", "tx-1", Decimal(1200)),
        ("globex", "tokens", "tx-2", Decimal("2.5")),
    ]


def test_the_openmeter_client_ingests_cloudevents(live_server, setup):
    client = OpenMeterClient(endpoint=f"{live_server.url}/compat/openmeter", token=setup["platform"])
    moment = timezone.now().replace(microsecond=0) - timedelta(minutes=10)

    def event(n, subject="sub_acme", kind="tokens", **data):
        return {
            "id": f"ce-{n}",
            "source": "my-app",
            "specversion": "1.0",
            "type": kind,
            "subject": subject,
            "time": moment.isoformat().replace("+00:00", "Z"),
            "data": data,
        }

    assert client.events.ingest_event(event(1, tokens=30)) is None
    assert (
        client.events.ingest_events([event(2, subject="globex", tokens=4.25), event(3, kind="api_calls")])
        is None
    )
    client.events.ingest_events_json(
        CloudEvent(id="ce-4", source="my-app", type="tokens", subject="acme", time=moment, data={"tokens": 5})
    )
    client.events.ingest_events_json(
        [CloudEvent(id="ce-5", source="my-app", type="api_calls", subject="sub_globex")]
    )
    # A resend is accepted and changes nothing, as OpenMeter deduplicates by id.
    client.events.ingest_event(event(1, tokens=30))

    with pytest.raises(HttpResponseError) as invalid:
        client.events.ingest_events([event(6, tokens=1), event(7, kind="nope", tokens=1), event(8, other=1)])
    assert invalid.value.status_code == 400
    problem = invalid.value.response.json()
    assert problem["title"] == "Bad Request"
    assert problem["extensions"]["errors"] == {
        "1": {"type": ["unknown meter 'nope'"]},
        "2": {
            "data.tokens": ["is required: meter 'tokens' takes the quantity from it when the event has none"]
        },
    }

    own = OpenMeterClient(endpoint=f"{live_server.url}/compat/openmeter", token=setup["acme"])
    own.events.ingest_event(event(9, subject="acme", kind="api_calls"))
    with pytest.raises(HttpResponseError) as other:
        own.events.ingest_event(event(10, subject="sub_globex", kind="api_calls"))
    assert other.value.status_code == 403
    with pytest.raises(ClientAuthenticationError):
        OpenMeterClient(
            endpoint=f"{live_server.url}/compat/openmeter", token="wrong.key"
        ).events.ingest_event(event(11, kind="api_calls"))

    assert rows() == [
        ("acme", "api_calls", "ce-3", Decimal(1)),
        ("acme", "api_calls", "ce-9", Decimal(1)),
        ("acme", "tokens", "ce-1", Decimal(30)),
        ("acme", "tokens", "ce-4", Decimal(5)),
        ("globex", "api_calls", "ce-5", Decimal(1)),
        ("globex", "tokens", "ce-2", Decimal("4.25")),
    ]
    assert UsageEvent.objects.get(event_id="ce-1").timestamp == moment.astimezone(UTC)
