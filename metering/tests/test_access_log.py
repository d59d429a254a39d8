"""import_access_log: API gateway access logs (local files, Firehose objects in S3) become usage events."""

import gzip
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import boto3
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from moto.server import ThreadedMotoServer

from metering import access_log
from metering.access_log import request_time_parse
from metering.allowances import plan_allowance_set
from metering.models import UsageEvent
from metering.tests.factories import MeterFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory
from tenants.tests.support import issue_key

pytestmark = pytest.mark.django_db

OLD_TIMESTAMP = "requestTime: is more than 35 days in the past; Stripe does not accept usage that old"


def summary(*, files: int, lines: int, accepted: int, duplicates: int = 0, bad: int = 0) -> str:
    return (
        f"files: {files}, lines read: {lines}, accepted: {accepted}, "
        f"duplicates: {duplicates}, bad lines: {bad}"
    )


def gateway_time(moment: datetime, *, offset_hours: int = 0) -> str:
    """API Gateway's $context.requestTime, month spelled by hand so the test does not depend on the locale."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    local = moment.astimezone(timezone(timedelta(hours=offset_hours)))
    return f"{local:%d}/{months[local.month - 1]}/{local:%Y:%H:%M:%S} {local:%z}"


def log_record(request_id: str, user, request_time, **fields) -> dict:
    return {
        "requestId": request_id,
        "ip": "203.0.113.7",
        "user": user,
        "requestTime": request_time,
        "httpMethod": "GET",
        "resourcePath": "/v1/things/{id}",
        "status": "200",
        "protocol": "HTTP/1.1",
        "responseLength": "512",
        **fields,
    }


def jsonl(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("import_access_log", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue().strip(), stderr.getvalue().strip()


@pytest.fixture
def globex():
    return TenantFactory(slug="globex")


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Nothing from the machine's own AWS setup may leak in.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_endpoint


@dataclass
class Bucket:
    client: object
    name: str

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    @property
    def url(self) -> str:
        return f"s3://{self.name}"


@pytest.fixture
def bucket(aws_env) -> Bucket:
    """A new bucket on the moto server (which lives for the module), reached over HTTP."""
    client = boto3.session.Session().client("s3")
    name = f"access-logs-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(client, name)


def firehose_key(prefix: str, hour: str, n: int, suffix: str = "") -> str:
    """Where a Firehose delivery stream leaves an object: prefix/YYYY/MM/DD/HH/stream-version-time-uuid."""
    stamp = hour.replace("/", "-")
    return f"{prefix}/{hour}/api-logs-1-{stamp}-{n:02d}-00-{uuid.UUID(int=n)}{suffix}"


# --- time formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("21/Nov/2026:10:00:00 +0000", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("21/Nov/2026:12:30:00 +0230", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T05:00:00.250-05:00", datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=UTC)),
        (1795255200123, datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)),
        ("1795255200123", datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)),
    ],
)
def test_request_time_accepts_gateway_iso_and_epoch_milliseconds(value, expected):
    assert request_time_parse(value) == expected


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-11-21T10:00:00", "21/Foo/2026:10:00:00 +0000", True, None]
)
def test_request_time_refuses_what_is_not_a_time_with_an_offset(value):
    with pytest.raises(ValueError, match="requestTime"):
        request_time_parse(value)


# --- local files ----------------------------------------------------------------------------


def test_it_imports_a_local_jsonl_file(tmp_path, meter, acme, globex, moment):
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", "acme", gateway_time(moment)),
            log_record("req-2", "globex", moment.isoformat().replace("+00:00", "Z")),
            log_record("req-3", "acme", int(moment.timestamp() * 1000) + 250, httpMethod="POST"),
        )
    )

    out, err = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=3, accepted=3)
    assert err == ""
    events = {e.event_id: e for e in UsageEvent.objects.all()}
    assert set(events) == {"req-1", "req-2", "req-3"}
    assert events["req-1"].tenant == acme
    assert events["req-2"].tenant == globex
    assert events["req-3"].tenant == acme
    assert all(e.meter == meter and e.quantity == 1 for e in events.values())
    assert events["req-1"].timestamp == moment
    assert events["req-2"].timestamp == moment
    assert events["req-3"].timestamp == moment + timedelta(milliseconds=250)
    assert events["req-1"].properties == {
        "method": "GET",
        "path": "/v1/things/{id}",
        "status": 200,
        "protocol": "HTTP/1.1",
        "response_length": 512,
        "ip": "203.0.113.7",
    }
    assert events["req-3"].properties["method"] == "POST"


def test_a_gzipped_file_is_recognised_by_its_magic_bytes_not_its_name(tmp_path, meter, acme, moment):
    logs = tmp_path / "logs"
    (logs / "2026" / "11").mkdir(parents=True)
    (logs / "2026" / "11" / "a.gz").write_bytes(
        gzip.compress(jsonl(log_record("req-1", "acme", moment.isoformat())))
    )
    # Firehose leaves compressed objects without a suffix unless told otherwise.
    (logs / "2026" / "11" / "b").write_bytes(
        gzip.compress(jsonl(log_record("req-2", "acme", moment.isoformat())))
    )
    (logs / "2026" / "11" / "c.gz").write_bytes(jsonl(log_record("req-3", "acme", moment.isoformat())))

    out, err = run(str(logs), "--meter", "api_requests")

    assert out == summary(files=3, lines=3, accepted=3)
    assert err == ""
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"req-1", "req-2", "req-3"}


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_is_imported(tmp_path, meter, acme, moment):
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", "acme", moment.isoformat()),
            b"this is not json",
            log_record("req-3", "initech", moment.isoformat()),
            log_record("req-4", "acme", (moment - timedelta(days=40)).isoformat()),
            {k: v for k, v in log_record("x", "acme", moment.isoformat()).items() if k != "requestId"},
            b"[1, 2]",
            log_record("req-7", "acme", "yesterday"),
            b"   ",
            log_record("req-9", "acme", moment.isoformat()),
        )
    )

    out, err = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=8, accepted=2, bad=6)
    reported = err.splitlines()
    assert len(reported) == 6
    assert reported[0].startswith(f"{path}:2: not valid JSON")
    assert f"{path}:3: unknown user 'initech' (no tenant with that slug)" in reported
    assert f"{path}:4: {OLD_TIMESTAMP}" in reported
    assert f"{path}:5: missing requestId" in reported
    assert f"{path}:6: not a JSON object" in reported
    assert any(line.startswith(f"{path}:7: requestTime 'yesterday' is not a time") for line in reported)
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"req-1", "req-9"}


def test_fail_on_bad_lines_exits_non_zero_after_importing_the_good_ones(tmp_path, meter, acme, moment):
    path = tmp_path / "access.log"
    path.write_bytes(jsonl(log_record("req-1", "acme", moment.isoformat()), b"{broken"))

    with pytest.raises(CommandError, match="--fail-on-bad-lines: 1 bad lines"):
        run(str(path), "--meter", "api_requests", "--fail-on-bad-lines")

    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["req-1"]


def test_one_invalid_event_drops_only_itself_from_its_batch(tmp_path, meter, acme, moment, monkeypatch):
    sizes = []
    record = access_log.usage_events_record

    def spy(*, tenant, events, now):
        sizes.append(len(events))
        return record(tenant=tenant, events=events, now=now)

    monkeypatch.setattr(access_log, "usage_events_record", spy)
    old = (moment - timedelta(days=36)).isoformat()
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            *(
                log_record(f"req-{n}", "acme", old if n == 1501 else moment.isoformat())
                for n in range(1, 2501)
            )
        )
    )

    out, err = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=2500, accepted=2499, bad=1)
    assert err == f"{path}:1501: {OLD_TIMESTAMP}"
    # Batches of at most 1,000 per tenant; the second lost only its bad event.
    assert sizes == [1000, 999, 500]
    assert UsageEvent.objects.filter(tenant=acme).count() == 2499


def test_a_line_too_long_to_hold_is_skipped_and_the_next_one_read(tmp_path, meter, acme, moment, monkeypatch):
    monkeypatch.setattr(access_log, "MAX_LINE_BYTES", 300)
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", "acme", moment.isoformat(), resourcePath="/" + "x" * 1000),
            log_record("req-2", "acme", moment.isoformat()),
        )
    )

    out, err = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=1, accepted=1, bad=1)
    assert err == f"{path}:1: line longer than 300 bytes"
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["req-2"]


def test_a_truncated_gzip_file_is_reported_and_the_other_files_imported(tmp_path, meter, acme, moment):
    records = [log_record(f"req-{n}", "acme", moment.isoformat()) for n in range(200)]
    whole = gzip.compress(jsonl(*records))
    (tmp_path / "a.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "b.gz").write_bytes(gzip.compress(jsonl(log_record("req-b", "acme", moment.isoformat()))))

    out, err = run(str(tmp_path), "--meter", "api_requests")

    assert out.endswith(", unreadable files: 1")
    assert err.startswith(f"{tmp_path / 'a.gz'}:")
    assert "cannot read further" in err
    assert UsageEvent.objects.filter(event_id="req-b").exists()


def test_tenants_can_be_found_by_api_key_prefix_in_another_field(tmp_path, meter, acme, globex, moment):
    prefix = issue_key(globex).partition(".")[0]
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", "acme", moment.isoformat(), apiKey=prefix),
            log_record("req-2", "acme", moment.isoformat(), apiKey="nope1234"),
        )
    )

    out, err = run(
        str(path), "--meter", "api_requests", "--user-field", "apiKey", "--tenant-by", "api_key_prefix"
    )

    assert out == summary(files=1, lines=2, accepted=1, bad=1)
    assert err == f"{path}:2: unknown user 'nope1234' (no tenant with that API key prefix)"
    assert UsageEvent.objects.get().tenant == globex


def test_tenants_can_be_found_by_id(tmp_path, meter, acme, globex, moment):
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", globex.pk, moment.isoformat()),
            log_record("req-2", str(acme.pk), moment.isoformat()),
            log_record("req-3", "acme", moment.isoformat()),
        )
    )

    out, err = run(str(path), "--meter", "api_requests", "--tenant-by", "id")

    assert out == summary(files=1, lines=3, accepted=2, bad=1)
    assert err == f"{path}:3: unknown user 'acme' (no tenant with that id)"
    assert dict(UsageEvent.objects.values_list("event_id", "tenant")) == {
        "req-1": globex.pk,
        "req-2": acme.pk,
    }


def test_a_dry_run_counts_but_stores_nothing(tmp_path, meter, acme, moment):
    path = tmp_path / "access.log"
    path.write_bytes(jsonl(*(log_record(f"req-{n}", "acme", moment.isoformat()) for n in range(3)), b"oops"))

    out, _ = run(str(path), "--meter", "api_requests", "--dry-run")

    assert out == "dry run (nothing stored): " + summary(files=1, lines=4, accepted=3, bad=1).replace(
        "accepted", "would accept"
    )
    assert not UsageEvent.objects.exists()

    run(str(path), "--meter", "api_requests")
    out, _ = run(str(path), "--meter", "api_requests", "--dry-run")

    assert "would accept: 0, duplicates: 3, bad lines: 1" in out


# --- S3, as Firehose leaves it ----------------------------------------------------------------


def test_it_imports_firehose_objects_from_s3_once(bucket, meter, acme, globex, moment):
    hour = "2026/11/21/10"
    keys = [firehose_key("gateway", hour, n, suffix) for n, suffix in ((1, ""), (2, ".gz"), (3, ""))]
    bucket.put(keys[2], gzip.compress(jsonl(log_record("req-5", "globex", gateway_time(moment)))))
    bucket.put(
        keys[0],
        jsonl(
            log_record("req-1", "acme", gateway_time(moment)),
            log_record("req-2", "globex", moment.isoformat()),
        ),
    )
    bucket.put(
        keys[1],
        gzip.compress(
            jsonl(
                log_record("req-3", "acme", int(moment.timestamp() * 1000)),
                log_record("req-4", "acme", moment.isoformat(), status="404", responseLength="-"),
            )
        ),
    )
    bucket.put("gateway/", b"")  # a console folder marker
    bucket.put("elsewhere/2026/11/21/10/other", jsonl(log_record("req-x", "acme", moment.isoformat())))

    out, err = run(f"{bucket.url}/gateway/", "--meter", "api_requests")

    assert out == summary(files=3, lines=5, accepted=5)
    assert err == ""
    events = {e.event_id: e for e in UsageEvent.objects.all()}
    assert {k: e.tenant.slug for k, e in events.items()} == {
        "req-1": "acme",
        "req-2": "globex",
        "req-3": "acme",
        "req-4": "acme",
        "req-5": "globex",
    }
    assert all(e.timestamp == moment and e.meter == meter for e in events.values())
    assert events["req-4"].properties == {
        "method": "GET",
        "path": "/v1/things/{id}",
        "status": 404,
        "protocol": "HTTP/1.1",
        "ip": "203.0.113.7",
    }

    out, err = run(f"{bucket.url}/gateway/", "--meter", "api_requests")

    assert out == summary(files=3, lines=5, accepted=0, duplicates=5)
    assert err == ""
    assert UsageEvent.objects.count() == 5


def test_bad_lines_in_s3_objects_name_the_key_and_line(bucket, meter, acme, moment):
    first = firehose_key("gateway", "2026/11/21/10", 1, ".gz")
    second = firehose_key("gateway", "2026/11/21/11", 1)
    bucket.put(second, jsonl(b"garbage", log_record("req-3", "acme", moment.isoformat())))
    bucket.put(
        first,
        gzip.compress(
            jsonl(
                log_record("req-1", "acme", moment.isoformat()),
                log_record("req-2", "umbrella", moment.isoformat()),
            )
        ),
    )

    out, err = run(bucket.url, "--meter", "api_requests")

    assert out == summary(files=2, lines=4, accepted=2, bad=2)
    # Read in key order: the 10 o'clock object before the 11 o'clock one.
    assert (
        err.splitlines()[0] == f"{bucket.url}/{first}:2: unknown user 'umbrella' (no tenant with that slug)"
    )
    assert err.splitlines()[1].startswith(f"{bucket.url}/{second}:1: not valid JSON")
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"req-1", "req-3"}


def test_an_empty_prefix_imports_nothing_and_says_so(bucket, meter):
    out, err = run(f"{bucket.url}/nothing-here/", "--meter", "api_requests")

    assert out == summary(files=0, lines=0, accepted=0)
    assert err == f"no files under {bucket.url}/nothing-here/"


def test_the_s3_client_has_timeouts_standard_retries_and_the_environment_endpoint(aws_env):
    client = access_log.s3_client()

    assert client.meta.config.connect_timeout == 5
    assert client.meta.config.read_timeout == 20
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert client.meta.endpoint_url == aws_env


# --- the run cannot start ---------------------------------------------------------------------


def test_a_missing_bucket_is_one_clear_line(aws_env, meter):
    with pytest.raises(CommandError) as raised:
        run("s3://no-such-bucket/gateway/", "--meter", "api_requests")

    assert str(raised.value) == (
        "cannot list s3://no-such-bucket/gateway/: NoSuchBucket: The specified bucket does not exist"
    )


def test_missing_credentials_are_one_clear_line(aws_env, monkeypatch, meter):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Without this botocore would ask the EC2 instance metadata service, and wait for it.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(CommandError) as raised:
        run("s3://any-bucket/gateway/", "--meter", "api_requests")

    assert str(raised.value) == "cannot list s3://any-bucket/gateway/: Unable to locate credentials"


def test_a_missing_local_path_is_one_clear_line(tmp_path, meter):
    with pytest.raises(CommandError) as raised:
        run(str(tmp_path / "nope"), "--meter", "api_requests")

    assert str(raised.value) == f"no such file or directory: {tmp_path / 'nope'}"


def test_an_unknown_meter_is_refused_before_the_source_is_read(tmp_path):
    MeterFactory(code="api_requests", name="API requests", aggregation="count")

    with pytest.raises(CommandError) as raised:
        run(str(tmp_path / "nope"), "--meter", "api_calls")

    assert str(raised.value) == "unknown meter 'api_calls'; create it first (create_meter)"


def test_a_bad_argument_is_one_line(tmp_path):
    with pytest.raises(CommandError) as raised:
        run(str(tmp_path), "--meter", "api_requests", "--tenant-by", "email")

    assert "\n" not in str(raised.value)
    assert "--tenant-by" in str(raised.value)


def test_offsets_other_than_utc_give_the_same_moment(tmp_path, meter, acme, moment):
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            log_record("req-1", "acme", gateway_time(moment, offset_hours=2)),
            log_record("req-2", "acme", plus_two.isoformat()),
        )
    )

    out, _ = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=2, accepted=2)
    assert {e.timestamp for e in UsageEvent.objects.all()} == {moment}


def test_a_batch_past_a_refusing_limit_is_reported_as_bad_lines_and_the_other_tenants_imported(
    tmp_path, meter, acme, globex, moment
):
    Tenant.objects.filter(pk=acme.pk).update(plan=Tenant.Plan.FREE)
    plan_allowance_set(
        plan="free", meter=meter, included=Decimal(0), hard_limit=Decimal(2), at_limit="refuse"
    )
    path = tmp_path / "access.log"
    path.write_bytes(
        jsonl(
            *(log_record(f"a-{n}", "acme", gateway_time(moment)) for n in range(3)),
            log_record("g-1", "globex", gateway_time(moment)),  # metered: no limit
        )
    )

    out, err = run(str(path), "--meter", "api_requests")

    assert out == summary(files=1, lines=4, accepted=1, bad=3)
    assert "3 request(s) of tenant acme refused: meter 'api_requests' is limited to 2" in err
    assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["g-1"]
