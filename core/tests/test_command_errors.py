"""The registry of errors a management command reports as one line: core's own, and the ones an app
registers in its AppConfig.ready (stripe_sync's), the most specific class choosing the line."""

import pytest
import stripe
from django.core.management.base import CommandError

from core.commands import BaseCommand, CommandErrors, command_errors
from stripe_sync.client import StripeKeyMalformed, StripeNotConfigured


def test_stripe_sync_registers_its_errors_when_the_apps_are_ready():
    assert command_errors.message(StripeNotConfigured()).startswith("STRIPE_API_KEY is not set")
    assert command_errors.message(StripeKeyMalformed()).startswith("STRIPE_API_KEY is malformed")
    refused = stripe.AuthenticationError("Invalid API Key provided", http_status=401)
    assert (
        command_errors.message(refused)
        == "Stripe refused STRIPE_API_KEY: Stripe: Invalid API Key provided (HTTP 401)"
    )
    missing = stripe.InvalidRequestError(
        "No such customer: 'cus_x'", param="customer", code="resource_missing"
    )
    assert command_errors.message(missing) == "Stripe: No such customer: 'cus_x' (resource_missing)"


def test_the_most_specific_registered_class_formats_whatever_the_registration_order():
    errors = CommandErrors()
    errors.register(KeyError, lambda exc: "a key")
    errors.register(LookupError, lambda exc: "a lookup\nover two lines")
    assert errors.message(KeyError("k")) == "a key"
    assert errors.message(IndexError(3)) == "a lookup over two lines"
    assert errors.types() == (KeyError, LookupError)


class Failing(BaseCommand):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def handle(self, *args, **options):
        raise self.exc


def test_a_registered_error_ends_a_command_with_one_line_and_any_other_keeps_its_traceback():
    with pytest.raises(CommandError, match=r"^STRIPE_API_KEY is not set"):
        Failing(StripeNotConfigured()).execute(skip_checks=True, no_color=True, force_color=False)
    with pytest.raises(ZeroDivisionError):
        Failing(ZeroDivisionError("a bug")).execute(skip_checks=True, no_color=True, force_color=False)
