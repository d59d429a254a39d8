"""The outgoing webhooks' admin in a real browser at 1280 px: an operator adds an endpoint and reads
the delivery log without scrolling sideways."""

import os

import pytest

from outbound.models import WebhookEndpoint
from outbound.tests.factories import WebhookDeliveryFactory, WebhookEndpointFactory

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture says why, and fails in CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "Playwright's Python package is not installed (requirements/dev.txt)", allow_module_level=True
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def table_fits(page) -> None:
    """The whole list is in view: no column hidden behind the list's own sideways scroll."""
    visible, full = page.locator(".results").evaluate("box => [box.clientWidth, box.scrollWidth]")
    assert full <= visible, f"the list is {full} px wide in a {visible} px box"


def test_an_operator_adds_an_endpoint_and_reads_the_delivery_log_at_1280px(
    page, login, django_user_model, screenshot, settings
):
    settings.WEBHOOKS_ALLOW_HTTP = False
    page.set_viewport_size({"width": 1280, "height": 900})
    django_user_model.objects.create_superuser(username="operator", email="", password="the-right-one")
    long_url = "https://hooks.example.com/" + "billing/events/" * 10
    endpoint = WebhookEndpointFactory(url=long_url, event_types=["payment.failed", "tenant.suspended"])
    for status, code in (("succeeded", 200), ("failed", 503), ("gave_up", 500), ("pending", None)):
        WebhookDeliveryFactory(
            endpoint=endpoint, status=status, last_status_code=code, last_latency_ms=code and 1234, attempts=3
        )

    login(username="operator", password="the-right-one", next_path="/admin/outbound/webhookdelivery/")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    expect(page.locator("#result_list")).to_contain_text("503, 1234 ms")
    screenshot(page, "delivery-log")
    assert page_width(page) <= 1280
    table_fits(page)

    page.goto("/admin/outbound/webhookendpoint/add/")
    page.fill("#id_url", "https://app.example.com/hooks/billing")
    page.check('input[name="event_types"][value="payment.failed"]')
    assert page_width(page) <= 1280
    screenshot(page, "add-endpoint")
    page.click('input[name="_save"]')
    created = WebhookEndpoint.objects.get(url="https://app.example.com/hooks/billing")
    expect(page.locator("ul.messagelist")).to_contain_text(created.secret)
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    screenshot(page, "endpoints")
    assert page_width(page) <= 1280
    table_fits(page)
    assert page.problems.errors == []
    assert page.problems.failed == []
