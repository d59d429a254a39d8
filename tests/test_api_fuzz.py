"""Schemathesis over the whole OpenAPI schema, against the Django app through WSGI, with every check.

Each operation is called with a real tenant key, with data that fits the schema and data that
does not: no answer may be a 5xx, every status and body must be one the schema documents, data
outside the schema must be refused, and so on (schemathesis's checks, all enabled).

Schema-valid data that the API still refuses with 400 is allowed only where validity depends on
what a schema cannot express: state (the meter must exist), the clock (an event's timestamp within
Stripe's 35 days), arithmetic (15 significant digits; a usage range of at most 31 days; start
before end), configuration (Checkout's and the portal's allowed hosts), and on the webhook, whose signature a
fuzzer cannot make (tests/test_webhook_fuzz.py signs its own).
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from billing_platform.wsgi import application
from metering.ingest import meter_cache
from metering.tests.factories import MeterFactory

# Statuses schemathesis accepts for schema-valid data by default, plus 400 where said above.
POSITIVE_WITH_400 = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": 100, "mode": "all", "database": "none"},
        "checks": {"enabled": True},
        "operations": [
            {
                "include-path": path,
                "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_WITH_400}},
            }
            for path in (
                "/api/v1/events",
                "/api/v1/usage",
                "/api/v1/billing/checkout",
                "/api/v1/billing/portal",
                "/api/v1/stripe/webhook",
                "/compat/openmeter/api/v1/events",
            )
        ]
        # Lago answers refused events with 422 (validation_errors), as its SDKs expect.
        + [
            {
                "include-path": path,
                "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_WITH_400, "422"]}},
            }
            for path in ("/compat/lago/api/v1/events", "/compat/lago/api/v1/events/batch")
        ],
    }
)


schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG)


@pytest.fixture
def api_setup(db, local_stripe, settings):
    settings.INGEST_RATE_LIMIT = "0"
    settings.CHECKOUT_ALLOWED_HOSTS = ["localhost"]
    meter_cache.clear()
    MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    # The WSGI handler closes the database connection after each request, which would end the
    # test's transaction; Django's own test client turns this off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.postgres
@schema.parametrize()
# The fixtures set up the tenant, meter and settings once per operation; examples share them.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_the_whole_api_conforms_to_its_schema_and_never_answers_5xx(case, api_setup, tenant_key):
    # A case whose headers break the schema on purpose may be one without the required
    # Authorization header: adding the key back would make it a valid request, which the negative
    # check then reports as "schema-violating request accepted". Such a case goes without the key.
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(headers={} if negative_headers else {"Authorization": f"Api-Key {tenant_key}"})


def test_the_schema_is_valid_openapi_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_the_schema_types_the_events_body_and_every_error(client):
    spec = client.get("/api/schema/?format=json").json()
    events = spec["paths"]["/api/v1/events"]["post"]
    body = events["requestBody"]["content"]["application/json"]["schema"]
    single, batch = body["oneOf"]
    assert single["properties"]["id"]["maxLength"] == 100
    assert batch["properties"]["events"]["maxItems"] == 1000
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                if path.startswith("/compat/openmeter/"):
                    # The peers' endpoints answer in the peer's shape (metering.compat).
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema["required"] == ["type", "title", "status", "detail"], (path, status)
                elif path.startswith("/compat/lago/"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["required"] == ["status", "error"], (path, status)
                else:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
