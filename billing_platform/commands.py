"""A base for the platform's management commands: bad arguments give one line, not a usage dump."""

from django.core.management.base import BaseCommand as DjangoBaseCommand

# The argparse `type=`s for dates, times and bounded numbers live with their parsers.
from billing_platform.parsing import date_argument, datetime_argument, decimal_argument, int_argument

__all__ = ["BaseCommand", "date_argument", "datetime_argument", "decimal_argument", "int_argument"]


class BaseCommand(DjangoBaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse prints the usage block before its error line; keep just the error line
        # ("manage.py create_tenant: error: argument --plan: invalid choice: ...").
        parser.print_usage = lambda file=None: None
        return parser
