"""Meter API requests from an API gateway's access logs (JSON Lines, local or as Firehose left them in S3).

Every log line becomes one event of the chosen meter, keyed by the gateway's request id, and goes
through the same validation and idempotent store as the ingestion API: importing the same logs
again changes nothing.
"""

import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from django.utils import timezone as django_timezone

from core.aws import aws_client
from core.json_input import text_problem
from core.parsing import (
    MAX_DATETIME,
    MAX_YEAR,
    MIN_DATETIME,
    MIN_YEAR,
    ParseError,
    parse_datetime,
)
from metering.ingest import (
    MAX_BATCH,
    EventsInvalid,
    UsageLimitExceeded,
    ValidEvent,
    usage_events_record,
    usage_events_stored_indexes,
    usage_events_validate,
)
from metering.models import Meter
from tenants.models import Tenant, TenantAPIKey

TENANT_BY_CHOICES = ("slug", "id", "api_key_prefix")
GZIP_MAGIC = b"\x1f\x8b"
# A gateway log line is well under a kilobyte; a longer "line" is a file without newlines
# (e.g. Firehose records concatenated without a delimiter), which must not be read whole.
MAX_LINE_BYTES = 1024 * 1024
READ_BUFFER_BYTES = 256 * 1024
# The S3 client's timeouts and retries are core.aws's: read_timeout bounds each socket read, not a whole
# object, so large objects still stream. Retries cover each request; a body cut off mid-stream leaves
# that file reported as unreadable, and running the import again is safe.

# API Gateway's $context.requestTime, e.g. 21/Nov/2026:10:00:00 +0000 (English month names
# whatever the process locale, hence no strptime %b).
_GATEWAY_TIME = re.compile(
    r"(\d{2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", re.ASCII
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
# Names the operator knows from the log, for the ingestion fields they became.
_LOG_FIELD = {"id": "requestId", "timestamp": "requestTime"}


class AccessLogImportError(Exception):
    """The import cannot run at all (no such meter, source unreadable); the message is one line."""


@dataclass
class AccessLogImportResult:
    dry_run: bool = False
    files: int = 0
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    unreadable_files: int = 0

    def summary(self) -> str:
        accepted = "would accept" if self.dry_run else "accepted"
        text = (
            f"files: {self.files}, lines read: {self.lines}, {accepted}: {self.accepted}, "
            f"duplicates: {self.duplicates}, bad lines: {self.bad_lines}"
        )
        if self.unreadable_files:
            text += f", unreadable files: {self.unreadable_files}"
        return f"dry run (nothing stored): {text}" if self.dry_run else text


class _LineError(Exception):
    """A log line that cannot become an event; the message is the reason."""


class _FileBroken(Exception):
    """A file that stopped being readable part-way (truncated gzip, dropped connection)."""

    def __init__(self, line_number: int, reason: str):
        super().__init__(reason)
        self.line_number = line_number


@dataclass(frozen=True, slots=True)
class _Pending:
    event: dict
    where: str  # "<file>:<line>"


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _within_bounds(moment: datetime, value: object) -> datetime:
    if not MIN_DATETIME <= moment <= MAX_DATETIME:
        raise ValueError(f"requestTime {_shown(value)} is not between {MIN_YEAR} and {MAX_YEAR}")
    return moment


def _shown(value: object) -> str:
    """A value from the log, short enough for one error line."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def request_time_parse(value: object) -> datetime:
    """The moment of a request (UTC), from API Gateway's requestTime, ISO-8601 with an offset or
    epoch milliseconds (requestTimeEpoch), between the years 2000 and 2100 (the bounds of
    core.parsing); ValueError says why a value is none of them."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"requestTime {_shown(value)} is not a time")
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value.strip())):
        try:
            if isinstance(value, str) and len(value.strip()) > 16:
                raise OverflowError
            milliseconds = int(value)
            moment = datetime.fromtimestamp(milliseconds // 1000, tz=UTC) + timedelta(
                milliseconds=milliseconds % 1000
            )
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"requestTime {_shown(value)} is out of range as epoch milliseconds") from None
        return _within_bounds(moment, value)
    if not isinstance(value, str):
        raise ValueError(f"requestTime {value!r} is not a time")
    text = value.strip()
    match = _GATEWAY_TIME.fullmatch(text)
    if match:
        day, month, year, hour, minute, second, sign, offset_h, offset_m = match.groups()
        if month.title() not in _MONTHS:
            raise ValueError(f"requestTime {value!r} has an unknown month {month!r}")
        if not MIN_YEAR <= int(year) <= MAX_YEAR:
            # Checked before the arithmetic: 31/Dec/9999:23:59:59 -1400 is past datetime.max in UTC.
            raise ValueError(f"requestTime {value!r} is not between {MIN_YEAR} and {MAX_YEAR}")
        offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
        try:
            moment = datetime(
                int(year),
                _MONTHS[month.title()],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone(-offset if sign == "-" else offset),
            )
        except ValueError as exc:
            raise ValueError(f"requestTime {value!r} is not a valid time: {exc}") from None
        return _within_bounds(moment.astimezone(UTC), value)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"requestTime {_shown(value)} is not a time: expected API Gateway's format "
            "(21/Nov/2026:10:00:00 +0000), ISO-8601 with an offset, or epoch milliseconds"
        ) from None
    try:
        return parse_datetime(text, what="", naive_is_utc=False)
    except ParseError as exc:
        raise ValueError(f"requestTime {_shown(value)} {exc}") from None


# A property value from a log line is stored in the event's JSON: text, a whole number a bigint
# and JavaScript hold exactly, or a finite float. Anything else (an object, "1e400", a 5000-digit
# number) means the line is not a gateway log line.
_MAX_WHOLE = 2**53


def _integer(value: object) -> object:
    """Gateways log status and response length as strings ("200", "-" for none)."""
    if isinstance(value, str):
        if _is_number(value.strip()) and len(value.strip()) <= 16:
            return int(value)
        if value.strip() in {"", "-"}:
            return None
    return value


def _property(name: str, value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            raise _LineError(f"{name} {problem}")
        if len(value) > 2048:
            raise _LineError(f"{name} is longer than 2048 characters")
        return value
    if isinstance(value, int) and -_MAX_WHOLE <= value <= _MAX_WHOLE:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise _LineError(f"{name} {_shown(value)} is not a text or a number in range")


class _TenantResolver:
    """Maps the log's user value to a tenant, once per distinct value in a run."""

    def __init__(self, *, tenant_by: str):
        self._tenant_by = tenant_by
        self._cache: dict[str, Tenant | None] = {}

    def resolve(self, value: object) -> Tenant:
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
            raise _LineError(f"user {_shown(value)} is not a tenant {self._tenant_by}")
        if isinstance(value, int) and abs(value) > _MAX_WHOLE:
            raise _LineError(f"user {_shown(value)} is not a tenant {self._tenant_by}")
        key = str(value).strip()
        if text_problem(key) is not None or len(key) > 200:
            raise _LineError(f"user {_shown(key)} is not a tenant {self._tenant_by}")
        if key not in self._cache:
            self._cache[key] = self._lookup(key)
        tenant = self._cache[key]
        if tenant is None:
            label = self._tenant_by.replace("_", " ").replace("api", "API")
            raise _LineError(f"unknown user {key!r} (no tenant with that {label})")
        return tenant

    def _lookup(self, key: str) -> Tenant | None:
        if self._tenant_by == "slug":
            return Tenant.objects.filter(slug=key).first()
        if self._tenant_by == "id":
            # Longer than any bigint: no such tenant (and no out-of-range error from the database).
            return Tenant.objects.filter(pk=int(key)).first() if _is_number(key) and len(key) < 19 else None
        # A key revoked since still tells whose request it was; the gateway already served it.
        api_key = TenantAPIKey.objects.select_related("tenant").filter(prefix=key).first()
        return api_key.tenant if api_key else None


def _event_from_line(
    *, raw: bytes, meter_code: str, user_field: str, resolver: _TenantResolver
) -> tuple[Tenant, dict]:
    try:
        record = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError and integers of over 4300 digits
        raise _LineError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise _LineError("not a gateway log line: nested too deeply") from None
    if not isinstance(record, dict):
        raise _LineError("not a JSON object")
    request_id = record.get("requestId")
    if not isinstance(request_id, str) or not request_id.strip():
        raise _LineError("missing requestId")
    if (problem := text_problem(request_id)) is not None:
        raise _LineError(f"requestId {problem}")
    if record.get(user_field) in (None, "", "-"):
        raise _LineError(f"missing {user_field}")
    if record.get("requestTime") in (None, "", "-"):
        raise _LineError("missing requestTime")
    tenant = resolver.resolve(record[user_field])
    try:
        moment = request_time_parse(record["requestTime"])
    except ValueError as exc:
        raise _LineError(str(exc)) from None
    properties = {
        name: _property(field, value)
        for name, field, value in (
            ("method", "httpMethod", record.get("httpMethod")),
            ("path", "resourcePath", record.get("resourcePath")),
            ("status", "status", _integer(record.get("status"))),
            ("protocol", "protocol", record.get("protocol")),
            ("response_length", "responseLength", _integer(record.get("responseLength"))),
            ("ip", "ip", record.get("ip")),
        )
    }
    event = {
        "id": request_id,
        "meter": meter_code,
        "quantity": 1,
        "timestamp": moment.isoformat(),
        "properties": {name: value for name, value in properties.items() if value is not None},
    }
    return tenant, event


def _messages(problems: dict) -> str:
    return "; ".join(
        f"{_LOG_FIELD.get(field, field)}: {' '.join(messages)}" for field, messages in problems.items()
    )


class _Importer:
    def __init__(
        self,
        *,
        meter_code: str,
        user_field: str,
        tenant_by: str,
        dry_run: bool,
        on_bad_line: Callable[[str], None],
    ):
        self.meter_code = meter_code
        self.user_field = user_field
        self.dry_run = dry_run
        self.on_bad_line = on_bad_line
        self.resolver = _TenantResolver(tenant_by=tenant_by)
        self.result = AccessLogImportResult(dry_run=dry_run)
        # Per tenant, the events waiting for a batch; at most MAX_BATCH each.
        self.pending: dict[int, tuple[Tenant, list[_Pending]]] = {}

    def bad(self, where: str, reason: str) -> None:
        self.result.bad_lines += 1
        self.on_bad_line(f"{where}: {reason}")

    def read_file(self, *, name: str, open_stream: Callable[[], IO[bytes]]) -> None:
        self.result.files += 1
        try:
            for number, raw in _numbered_lines(open_stream=open_stream):
                if raw is None:
                    self.bad(f"{name}:{number}", f"line longer than {MAX_LINE_BYTES} bytes")
                    continue
                if not raw.strip():
                    continue
                self.result.lines += 1
                self.line(where=f"{name}:{number}", raw=raw)
        except _FileBroken as exc:
            self.result.unreadable_files += 1
            self.on_bad_line(f"{name}:{exc.line_number}: cannot read further: {exc}")

    def line(self, *, where: str, raw: bytes) -> None:
        try:
            tenant, event = _event_from_line(
                raw=raw, meter_code=self.meter_code, user_field=self.user_field, resolver=self.resolver
            )
        except _LineError as exc:
            self.bad(where, str(exc))
            return
        _, batch = self.pending.setdefault(tenant.pk, (tenant, []))
        batch.append(_Pending(event, where))
        if len(batch) >= MAX_BATCH:
            self.flush(tenant.pk)

    def flush_all(self) -> None:
        for tenant_id in list(self.pending):
            self.flush(tenant_id)

    def flush(self, tenant_id: int) -> None:
        tenant, batch = self.pending.pop(tenant_id)
        while batch:
            now = django_timezone.now()
            try:
                valid = usage_events_validate(
                    payload={"events": [p.event for p in batch]}, now=now, tenant=tenant
                )
            except EventsInvalid as exc:
                # Validation is all-or-nothing: report and drop the bad events, then the rest again.
                if None in exc.errors:
                    for item in batch:
                        self.bad(item.where, _messages(exc.errors[None]))
                    return
                for index, problems in sorted(exc.errors.items()):
                    self.bad(batch[index].where, _messages(problems))
                batch = [item for index, item in enumerate(batch) if index not in exc.errors]
                continue
            self.store(tenant=tenant, valid=valid, now=now)
            return

    def store(self, *, tenant: Tenant, valid: list[ValidEvent], now: datetime) -> None:
        if not self.dry_run:
            try:
                outcome = usage_events_record(tenant=tenant, events=valid, now=now)
            except UsageLimitExceeded as exceeded:
                # The batch is refused whole: its lines count as bad, reported once.
                self.result.bad_lines += len(valid)
                self.on_bad_line(f"{len(valid)} request(s) of tenant {tenant.slug} refused: {exceeded}")
                return
            self.result.accepted += outcome.accepted
            self.result.duplicates += outcome.duplicates
            return
        # The store's own key look-up, as recording would decide (PostgreSQL: the key table).
        stored = set(usage_events_stored_indexes(events=valid, tenant=tenant))
        seen = {event.event_id for index, event in enumerate(valid) if index in stored}
        for event_id in (event.event_id for event in valid):
            if event_id in seen:
                self.result.duplicates += 1
            else:
                seen.add(event_id)
                self.result.accepted += 1


def _numbered_lines(*, open_stream: Callable[[], IO[bytes]]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line, streamed; None for a line over MAX_LINE_BYTES.

    Gzip is recognised by its magic bytes: Firehose names compressed objects without `.gz`
    unless told to, and a `.gz` name may hold plain text.
    """
    number = 0
    try:
        with open_stream() as raw_stream:
            stream: IO[bytes] = raw_stream
            if raw_stream.peek(2)[:2] == GZIP_MAGIC:
                stream = gzip.GzipFile(fileobj=raw_stream, mode="rb")
            while True:
                line = stream.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    # Skip the rest of the over-long line without holding it.
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(MAX_LINE_BYTES)
                    yield number, None
                    continue
                yield number, line
    except (BotoCoreError, ClientError, OSError, EOFError, zlib.error) as exc:
        raise _FileBroken(number + 1, _error_text(exc)) from None


def _error_text(exc: BaseException) -> str:
    """One line for an operator: the service's code and message, or the OS's reason."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def s3_client() -> BaseClient:
    """An S3 client from core.aws's factory (boto3's own chain: AWS_ENDPOINT_URL, credentials, region)."""
    return aws_client("s3")


def _files_under(directory: Path) -> list[Path]:
    def refuse(error: OSError) -> None:
        raise error

    files = [
        Path(root, name)
        for root, _, names in os.walk(directory, onerror=refuse, followlinks=True)
        for name in names
    ]
    # The order S3 lists keys in, so a local copy of a Firehose prefix is read in the same order.
    return sorted((file for file in files if file.is_file()), key=str)


def _import_local(importer: _Importer, *, source: str) -> None:
    path = Path(source)
    if not path.exists():
        raise AccessLogImportError(f"no such file or directory: {source}")
    try:
        if path.is_dir():
            files = _files_under(path)
        else:
            path.open("rb").close()  # a lone file that cannot be opened is a source that cannot be read
            files = [path]
    except OSError as exc:
        raise AccessLogImportError(f"cannot read {source}: {_error_text(exc)}") from None
    for file in files:
        importer.read_file(
            name=str(file),
            open_stream=lambda file=file: file.open("rb", buffering=READ_BUFFER_BYTES),
        )


def _import_s3(importer: _Importer, *, source: str) -> None:
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    if not bucket:
        raise AccessLogImportError(f"SOURCE {source!r} must look like s3://bucket/prefix")
    try:
        client = s3_client()
    except (BotoCoreError, ValueError) as exc:  # e.g. a malformed AWS_ENDPOINT_URL
        raise AccessLogImportError(f"cannot reach S3 for {source}: {_error_text(exc)}") from None
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        # S3 lists keys in UTF-8 binary order, so the Firehose YYYY/MM/DD/HH keys come sorted
        # without holding the whole listing.
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a console "folder" marker, not a log
                importer.read_file(
                    name=f"s3://{bucket}/{key}",
                    open_stream=lambda key=key: io.BufferedReader(
                        client.get_object(Bucket=bucket, Key=key)["Body"], buffer_size=READ_BUFFER_BYTES
                    ),
                )
    except (BotoCoreError, ClientError) as exc:
        raise AccessLogImportError(f"cannot list {source}: {_error_text(exc)}") from None


def access_log_import(
    *,
    source: str,
    meter_code: str,
    on_bad_line: Callable[[str], None],
    user_field: str = "user",
    tenant_by: str = "slug",
    dry_run: bool = False,
) -> AccessLogImportResult:
    """Meter every request of the access logs under `source` as one event of `meter_code`.

    Bad lines are passed to `on_bad_line` as "<file>:<line>: <reason>" and counted; the rest is
    stored in batches of up to MAX_BATCH per tenant, each committed on its own, so a run cut short
    can simply be run again.
    """
    if tenant_by not in TENANT_BY_CHOICES:
        raise AccessLogImportError(f"tenant_by must be one of {', '.join(TENANT_BY_CHOICES)}")
    if not Meter.objects.filter(code=meter_code).exists():
        raise AccessLogImportError(f"unknown meter {meter_code!r}; create it first (create_meter)")
    importer = _Importer(
        meter_code=meter_code,
        user_field=user_field,
        tenant_by=tenant_by,
        dry_run=dry_run,
        on_bad_line=on_bad_line,
    )
    if source.startswith("s3://"):
        _import_s3(importer, source=source)
    else:
        _import_local(importer, source=source)
    importer.flush_all()
    return importer.result
