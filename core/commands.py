"""A base for the platform's management commands: one error line and a non-zero exit, never a traceback.

- A bad argument gives argparse's one error line, not a usage dump (arguments are typed with the
  bounded parsers of core.parsing: `date_argument`, `int_argument(...)`, ...).
- The errors of the platform's domain that a command's handle() lets through become a CommandError
  of one line in `execute`, so every command, including a new one, ends with "CommandError: <reason>"
  and exit status 1. Which errors those are is the registry `command_errors`: core registers its own
  (ParseError, ValidationError, a missing row, AWS's client errors); an app registers its errors
  with a formatter in its AppConfig.ready (stripe_sync: STRIPE_API_KEY unset or malformed, Stripe's
  errors), so core imports no app. Anything else is a bug and keeps its traceback.
"""

from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError
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
    "command_errors",
    "date_argument",
    "datetime_argument",
    "decimal_argument",
    "int_argument",
    "validation_error_message",
]


Formatter = Callable[[BaseException], str]


class CommandErrors:
    """The exception types a command reports as one line, each with the formatter of its line.

    The most specific registered class of an exception (along its MRO) formats it, so a subclass can
    say more than its base (stripe.AuthenticationError vs stripe.StripeError) in any registration order.
    """

    def __init__(self) -> None:
        self._formatters: dict[type[BaseException], Formatter] = {}

    def register(self, exc_type: type[BaseException], formatter: Formatter | None = None) -> None:
        """Report `exc_type` as `formatter(exc)` (default: the exception's own message), on one line."""
        self._formatters[exc_type] = formatter or _message

    def types(self) -> tuple[type[BaseException], ...]:
        return tuple(self._formatters)

    def message(self, exc: BaseException) -> str:
        for cls in type(exc).__mro__:
            if cls in self._formatters:
                return one_line(self._formatters[cls](exc)) or type(exc).__name__
        return _message(exc)


def _message(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


def _aws_client_error(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"AWS: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")


command_errors = CommandErrors()
command_errors.register(ParseError)
command_errors.register(ValidationError, validation_error_message)
command_errors.register(ObjectDoesNotExist)
command_errors.register(ClientError, _aws_client_error)
command_errors.register(BotoCoreError, lambda exc: f"AWS: {exc}")


def command_error_message(exc: BaseException) -> str:
    """The one line an operator sees for an error of the platform's domain."""
    return command_errors.message(exc)


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
        except Exception as exc:
            if not isinstance(exc, command_errors.types()):
                raise  # a bug: its traceback is what a developer needs
            raise CommandError(command_errors.message(exc)) from exc
