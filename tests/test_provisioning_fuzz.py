"""Schemathesis over the provisioning API (/api/v1/tenants...) with a platform key holding every scope.

tests/test_api_fuzz.py calls every operation with a tenant key, which these operations refuse (403)
before reading anything; here they run for real. Schema-valid data may still be refused with 400
where validity depends on state (a slug or external id already taken or equal to another tenant's
slug, a name that makes no slug) and with 404 for a ref that names no tenant; onboarding reaches the
local Stripe server.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from billing_platform.wsgi import application
from tenants.services import tenant_create
from tenants.tests.support import issue_platform_key

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": 40, "mode": "all", "database": "none"},
        "checks": {
            "enabled": True,
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]},
        },
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG).include(
    path_regex=r"^/api/v1/tenants"
)


@pytest.fixture
def provisioning_setup(db, local_stripe):
    tenant_create(name="Acme", external_id="cus_acme", source="test")
    # The WSGI handler closes the database connection after each request, which would end the
    # test's transaction; Django's own test client turns this off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield issue_platform_key()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.postgres
@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_the_provisioning_api_conforms_to_its_schema_with_a_platform_key(case, provisioning_setup):
    negative_headers = case.meta is not None and case.meta.is_negative_at(
        schemathesis.core.parameters.ParameterLocation.HEADER
    )
    case.call_and_validate(
        headers={} if negative_headers else {"Authorization": f"Bearer {provisioning_setup}"}
    )
