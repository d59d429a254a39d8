"""Fixtures shared by the console's tests."""

import pytest


@pytest.fixture
def costwatch_settings(settings):
    """Costwatch configured as the dashboard, tenant page and report tests expect."""
    settings.COSTWATCH_METRIC = "UnblendedCost"
    settings.COSTWATCH_TENANT_TAG_KEY = "tenant"
    settings.COSTWATCH_CURRENCY = "USD"
    return settings
