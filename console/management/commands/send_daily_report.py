from pathlib import Path

from django.core.management.base import CommandError

from console.reports import daily_report_build, daily_report_csv, daily_report_send, yesterday
from core.commands import BaseCommand, date_argument


class Command(BaseCommand):
    help = (
        "E-mail one UTC day's usage report to OPERATOR_EMAILS (what the 07:00 UTC task runs), "
        "or write it as CSV with --csv."
    )

    def add_arguments(self, parser):
        parser.add_argument("--date", type=date_argument, help="the UTC day to report (default: yesterday)")
        parser.add_argument(
            "--csv",
            metavar="FILE",
            help="write the CSV to FILE instead of e-mailing it ('-': standard output)",
        )
        parser.add_argument(
            "--resend", action="store_true", help="e-mail it even if the day's report was already sent"
        )

    def handle(self, *args, date, csv, resend, **options):
        day = date or yesterday()
        if csv:
            content = daily_report_csv(daily_report_build(day=day))
            if csv == "-":
                self.stdout.write(content, ending="")
                return
            try:
                Path(csv).write_text(content, encoding="utf-8", newline="")
            except OSError as exc:
                raise CommandError(f"--csv: cannot write {csv}: {exc.strerror}") from None
            self.stdout.write(f"wrote the report for {day} to {csv}")
            return
        self.stdout.write(daily_report_send(day=day, force=resend).message)
