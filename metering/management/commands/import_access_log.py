from django.core.management.base import CommandError

from core.commands import BaseCommand
from metering.access_log import TENANT_BY_CHOICES, AccessLogImportError, access_log_import


class Command(BaseCommand):
    help = (
        "Meter API requests from API gateway access logs (JSON Lines, plain or gzipped): a file, "
        "a directory or s3://bucket/prefix. Each request is one event of --meter, keyed by its "
        "requestId, so importing the same logs again changes nothing. Bad lines are listed on "
        "stderr as FILE:LINE: REASON and skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="a file, a directory, or s3://bucket/prefix (as Firehose writes)")
        parser.add_argument("--meter", required=True, help="code of the meter each request counts for")
        parser.add_argument(
            "--user-field", default="user", help="log field naming the tenant (default: user)"
        )
        parser.add_argument(
            "--tenant-by",
            choices=TENANT_BY_CHOICES,
            default="slug",
            help="what the user field holds: a tenant slug (default), id, or API key prefix",
        )
        parser.add_argument("--dry-run", action="store_true", help="check and count, store nothing")
        parser.add_argument("--fail-on-bad-lines", action="store_true", help="exit 1 when any line was bad")

    def handle(self, *args, source, meter, user_field, tenant_by, dry_run, fail_on_bad_lines, **options):
        try:
            result = access_log_import(
                source=source,
                meter_code=meter,
                user_field=user_field,
                tenant_by=tenant_by,
                dry_run=dry_run,
                on_bad_line=self.stderr.write,
            )
        except AccessLogImportError as exc:
            raise CommandError(str(exc)) from None
        if result.files == 0:
            self.stderr.write(f"no files under {source}")
        self.stdout.write(result.summary())
        if fail_on_bad_lines and (result.bad_lines or result.unreadable_files):
            problems = f"{result.bad_lines} bad lines"
            if result.unreadable_files:
                problems += f", {result.unreadable_files} unreadable files"
            raise CommandError(f"--fail-on-bad-lines: {problems}")
