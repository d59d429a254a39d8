"""A base for the platform's management commands: bad arguments give one line, not a usage dump."""

from argparse import ArgumentTypeError
from datetime import date

from django.core.management.base import BaseCommand as DjangoBaseCommand


class BaseCommand(DjangoBaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse prints the usage block before its error line; keep just the error line
        # ("manage.py create_tenant: error: argument --plan: invalid choice: ...").
        parser.print_usage = lambda file=None: None
        return parser


def date_argument(value: str) -> date:
    """An argparse `type=` for a YYYY-MM-DD day: `parser.add_argument("--date", type=date_argument)`.

    ArgumentTypeError, not CommandError: argparse turns it into its one error line
    ("error: argument --date: must be a date such as ..."), whereas a CommandError raised while
    parsing escapes as a traceback from the command line.
    """
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(f"must be a date such as 2026-11-20, got {value!r}") from None
