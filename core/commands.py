"""A base for the platform's management commands: one error line and a non-zero exit, never a traceback.

- A bad argument gives argparse's one error line, not a usage dump (arguments are typed with the
  bounded parsers of core.parsing: `date_argument`, `int_argument(...)`, ...).
- The errors of the platform's own domain that a command's handle() lets through (ParseError,
  ValidationError, a missing row, Stripe's and AWS's client errors, STRIPE_API_KEY unset or
  malformed) become a CommandError of one line in `execute`, so every command, including a new one,
  ends with "CommandError: <reason>" and exit status 1. Anything else is a bug and keeps its traceback.
"""

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import BaseCommand as DjangoBaseCommand
from django.core.management.base import CommandError, SystemCheckError

# The argparse `type=`s for dates, times and bounded numbers live with their parsers.
from core.parsing import (
    ParseError,
    date_argument,
    datetime_argument,
    decimal_argument,
    int_argument,
)
from core.validation import one_line, validation_error_message

__all__ = [
    "BaseCommand",
    "command_error_message",
    "date_argument",
    "datetime_argument",
    "decimal_argument",
    "int_argument",
    "validation_error_message",
]


def _domain_errors() -> tuple[type[BaseException], ...]:
    # Imported when a command runs: the apps are loaded by then.
    import stripe
    from botocore.exceptions import BotoCoreError, ClientError

    from stripe_sync.client import StripeNotConfigured

    return (
        ParseError,
        ValidationError,
        ObjectDoesNotExist,
        StripeNotConfigured,
        stripe.StripeError,
        BotoCoreError,
        ClientError,
    )


def command_error_message(exc: BaseException) -> str:
    """The one line an operator sees for an error of the platform's domain."""
    import stripe
    from botocore.exceptions import ClientError

    from stripe_sync.catalog import stripe_error_message

    if isinstance(exc, ValidationError):
        return validation_error_message(exc)
    if isinstance(exc, stripe.AuthenticationError):
        return one_line(f"Stripe refused STRIPE_API_KEY: {stripe_error_message(exc)}")
    if isinstance(exc, stripe.StripeError):
        return one_line(stripe_error_message(exc))
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return one_line(f"AWS: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": "))
    if exc.__module__.startswith("botocore"):
        return one_line(f"AWS: {exc}")
    return one_line(exc) or type(exc).__name__


class BaseCommand(DjangoBaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse prints the usage block before its error line; keep just the error line
        # ("manage.py create_tenant: error: argument --plan: invalid choice: ...").
        parser.print_usage = lambda file=None: None
        return parser

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except SystemCheckError:
            raise
        except CommandError as exc:
            message = one_line(exc)
            if message == str(exc):
                raise
            raise CommandError(message, returncode=exc.returncode) from exc
        except _domain_errors() as exc:
            raise CommandError(command_error_message(exc)) from exc
