"""The tenant form shows its Decimal inputs plainly (core.admin_mixins.PlainDecimalsMixin)."""

from decimal import Decimal

import pytest
from bs4 import BeautifulSoup

from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_the_tenant_form_shows_the_free_allowance_plainly(admin_client):
    tenant = TenantFactory(monthly_free_allowance=Decimal("1000.5"))
    free = TenantFactory(monthly_free_allowance=Decimal("0"))

    for row, expected in ((tenant, "1000.5"), (free, "0")):
        response = admin_client.get(f"/admin/tenants/tenant/{row.pk}/change/")
        page = BeautifulSoup(response.content, "html.parser")
        assert page.select_one('input[name="monthly_free_allowance"]')["value"] == expected
