"""import_access_log keeps its promise on hostile lines: each bad line is reported with its file and line
number, and the import goes on with the next. Named repros first, then hypothesis fuzzing of the line
parser and of whole files."""

import io
import itertools
import json

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metering import access_log
from metering.access_log import access_log_import, request_time_parse
from metering.models import UsageEvent

pytestmark = pytest.mark.django_db

FIELDS = ["requestId", "user", "requestTime", "httpMethod", "resourcePath", "status", "protocol",
          "responseLength", "ip"]  # fmt: skip


def good(request_id: str, moment) -> bytes:
    record = {
        "requestId": request_id,
        "user": "acme",
        "requestTime": moment.isoformat(),
        "httpMethod": "GET",
        "resourcePath": "/v1/things",
        "status": "200",
        "responseLength": "12",
        "ip": "203.0.113.7",
    }
    return json.dumps(record).encode()


def import_file(tmp_path, *lines: bytes) -> tuple[str, list[str]]:
    path = tmp_path / "access.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_access_log", str(path), "--meter", "api_requests", stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip().splitlines()


def between_good_lines(tmp_path, moment, bad: bytes) -> tuple[str, list[str]]:
    """Import good, bad, good; assert both good lines are stored; return the bad line's report."""
    out, err = import_file(tmp_path, good("req-1", moment), bad, good("req-3", moment))
    assert out == "files: 1, lines read: 3, accepted: 2, duplicates: 0, bad lines: 1"
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"req-1", "req-3"}
    assert len(err) == 1
    assert err[0].startswith(f"{tmp_path / 'access.log'}:2: ")
    return out, err


def record_with(moment, **fields) -> bytes:
    record = json.loads(good("req-2", moment))
    record.update(fields)
    return json.dumps(record).encode()


def test_a_line_with_request_time_31_dec_9999_minus_1400_is_reported_and_the_import_goes_on(
    tmp_path, meter, acme, moment
):
    _, err = between_good_lines(
        tmp_path, moment, record_with(moment, requestTime="31/Dec/9999:23:59:59 -1400")
    )
    assert err[0].endswith("requestTime '31/Dec/9999:23:59:59 -1400' is not between 2000 and 2100")


@pytest.mark.parametrize(
    "value",
    [
        "31/Dec/9999:23:59:59 -1400",
        "01/Jan/0001:00:00:00 +1400",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "9" * 5000,
        99999999999999999999,
        -99999999999999,
        1e308,
        float("inf"),
    ],
)
def test_request_times_outside_2000_to_2100_are_refused_with_a_value_error(value):
    with pytest.raises(ValueError, match="requestTime"):
        request_time_parse(value)


def test_a_deeply_nested_line_is_reported_and_the_import_goes_on(tmp_path, meter, acme, moment):
    _, err = between_good_lines(tmp_path, moment, b"[" * 200_000 + b"]" * 200_000)
    assert err[0].endswith("not a gateway log line: nested too deeply")


def test_a_deeply_nested_field_is_reported_and_the_import_goes_on(tmp_path, meter, acme, moment):
    nested = json.loads(record_with(moment))
    raw = json.dumps(nested)[:-1].encode() + b', "httpMethod": ' + b"[" * 500 + b"]" * 500 + b"}"
    _, err = between_good_lines(tmp_path, moment, raw)
    assert "httpMethod" in err[0]


def test_a_line_that_is_not_utf8_is_reported_and_the_import_goes_on(tmp_path, meter, acme, moment):
    _, err = between_good_lines(tmp_path, moment, record_with(moment).replace(b"GET", b"G\xff\xfeT"))
    assert "not valid JSON" in err[0]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "9" * 5000}, "status"),
        ({"responseLength": 10**30}, "responseLength"),
        ({"responseLength": "1e400"}, None),  # a text, kept as it is
        ({"requestTime": "9" * 5000}, "out of range as epoch milliseconds"),
        ({"requestTime": 10**30}, "out of range as epoch milliseconds"),
        ({"user": 10**30}, "is not a tenant slug"),
        ({"user": "ac\x00me"}, "is not a tenant slug"),
        ({"requestId": "req\x002"}, "requestId must not contain NUL"),
        ({"requestId": "req\ud8002"}, "requestId must not contain unpaired surrogates"),
        ({"resourcePath": "/v1/\x00"}, "resourcePath must not contain NUL"),
        ({"ip": "\udfff"}, "ip must not contain unpaired surrogates"),
    ],
)
def test_huge_numbers_and_unstorable_text_in_a_line_are_reported_and_the_import_goes_on(
    tmp_path, meter, acme, moment, fields, reason
):
    bad = record_with(moment, **fields)
    if reason is None:
        out, err = import_file(tmp_path, good("req-1", moment), bad, good("req-3", moment))
        assert (out, err) == ("files: 1, lines read: 3, accepted: 3, duplicates: 0, bad lines: 0", [])
        return
    _, err = between_good_lines(tmp_path, moment, bad)
    assert reason in err[0]


def test_a_huge_number_literal_is_reported_and_the_import_goes_on(tmp_path, meter, acme, moment):
    raw = record_with(moment)[:-1] + b', "status": ' + b"9" * 5000 + b"}"
    _, err = between_good_lines(tmp_path, moment, raw)
    assert "not valid JSON" in err[0]


# --- fuzzing --------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "acme",
            "-",
            "",
            "200",
            "31/Dec/9999:23:59:59 -1400",
            "9999-12-31T23:59:59-14:00",
            "21/Nov/2026:10:00:00 +0000",
            "\x00",
            "\ud800",
            "9" * 400,
        ]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS))


def encoded(record: dict) -> bytes:
    # allow_nan writes Infinity/NaN as Python's decoder reads them back; surrogates pass as \\uXXXX.
    return json.dumps(record).encode()


lines = st.one_of(
    records.map(encoded),
    st.binary(max_size=200).map(lambda raw: raw.replace(b"\n", b" ")),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=lines)
def test_the_line_parser_either_makes_an_event_or_says_why_the_line_is_bad(acme, raw):
    resolver = access_log._TenantResolver(tenant_by="slug")
    try:
        tenant, event = access_log._event_from_line(
            raw=raw, meter_code="api_requests", user_field="user", resolver=resolver
        )
    except access_log._LineError as exc:
        reason = str(exc)
    else:
        reason = None
    if reason is not None:
        assert reason
        assert "\n" not in reason
        return
    assert tenant == acme
    json.dumps(event, allow_nan=False)  # what is stored is JSON
    assert request_time_parse(event["timestamp"]).year in range(2000, 2101)


_example = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=st.lists(lines, min_size=1, max_size=8), data=st.data())
def test_a_file_of_random_lines_mixed_with_good_ones_imports_the_good_and_reports_the_rest(
    tmp_path, meter, acme, moment, bad, data
):
    run = next(_example)
    good_ids = [f"good-{run}-{n}" for n in range(3)]
    mixed = [raw for raw in bad if raw.strip()]
    for request_id in good_ids:
        mixed.insert(data.draw(st.integers(min_value=0, max_value=len(mixed))), good(request_id, moment))
    # A file that starts with gzip's magic bytes is read as gzip (Firehose names are no guide), and
    # then reported as one unreadable file: not a file of lines.
    assume(not mixed[0].startswith(access_log.GZIP_MAGIC))
    path = tmp_path / f"access-{run}.log"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    reported: list[str] = []

    result = access_log_import(source=str(path), meter_code="api_requests", on_bad_line=reported.append)

    assert set(good_ids) <= set(UsageEvent.objects.filter(tenant=acme).values_list("event_id", flat=True))
    assert result.lines == len(mixed)
    assert result.bad_lines == len(reported)
    assert result.accepted + result.duplicates + result.bad_lines == len(mixed)
    for line in reported:
        assert line.startswith(f"{path}:")
        assert "\n" not in line
