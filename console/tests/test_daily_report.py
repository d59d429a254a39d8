"""The daily usage report: figures of a hand-computed day, its CSV, the e-mail, command, admin pages, task."""

import socketserver
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
import redis
from django.core import mail
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from conftest import ROOT, beat_task, start_celery_worker, stop_celery_worker
from console.reports import (
    daily_report_build,
    daily_report_csv,
    daily_report_send,
)
from console.tasks import send_daily_report
from core.money import Money
from costwatch.models import CostCheckRun
from costwatch.tests.factories import CostCheckRunFactory, DailyCostFactory
from metering.models import AggregationRun
from metering.tests.factories import AggregationRunFactory, HourlyAggregateFactory, MeterFactory, PriceFactory
from stripe_sync.models import UsageReport, WebhookEvent
from stripe_sync.tests.factories import UsageReportFactory, WebhookEventFactory
from tenants.models import Tenant
from tenants.tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 19)
NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)  # when Beat sends the report of the 19th


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def aggregate(tenant, meter, hour: datetime, *, events: int, value: str | None = None) -> None:
    HourlyAggregateFactory(
        tenant=tenant, meter=meter, hour=hour, event_count=events, value=Decimal(value or events)
    )


def cost(day: date, service: str, tag: str, amount: str, metric: str = "UnblendedCost") -> None:
    DailyCostFactory(
        metric=metric, day=day, service=service, tag_value=tag, amount=Decimal(amount), currency="USD"
    )


@pytest.fixture(autouse=True)
def costwatch_settings(settings):
    settings.COSTWATCH_METRIC = "UnblendedCost"
    settings.COSTWATCH_TENANT_TAG_KEY = "tenant"
    settings.COSTWATCH_CURRENCY = "USD"
    settings.OPERATOR_EMAILS = []
    return settings


@pytest.fixture
def day_of_business(db):
    """A hand-computed 19 November 2026; the expected figures are worked out beside each row."""
    api_calls = MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    storage = MeterFactory(code="storage_gb", name="Storage", unit="GB", aggregation="sum")
    acme = TenantFactory(name="Acme", slug="acme")
    beta = TenantFactory(name="Beta", slug="beta")
    free = TenantFactory(name="Freebie", slug="freebie", plan=Tenant.Plan.FREE)
    PriceFactory(meter=api_calls, plan="metered", unit_amount=Decimal("0.5"))  # half a cent a call
    # storage_gb has no price: usage without revenue.

    aggregate(acme, api_calls, at(2), events=1000)  # earlier this month: month to date only
    aggregate(acme, api_calls, at(18, 23), events=100)  # the day before: month to date only
    aggregate(acme, api_calls, at(19, 10), events=400)  # the day: 400 + 200 calls = 3.00 USD
    aggregate(acme, api_calls, at(19, 15), events=200)
    aggregate(beta, api_calls, at(19, 0), events=2000)  # the day's first hour: 10.00 USD
    aggregate(beta, storage, at(19, 23), events=2, value="250")  # the day's last hour, unpriced
    aggregate(beta, api_calls, at(20, 0), events=999)  # the next day: nowhere in the report
    aggregate(free, api_calls, at(19, 12), events=50)  # no price on the free plan
    aggregate(acme, api_calls, datetime(2026, 10, 31, 23, tzinfo=UTC), events=5000)  # last month

    failed_report = UsageReportFactory(
        tenant=acme,
        meter=api_calls,
        hour=at(19, 8),
        revision=1,
        identifier="acme-api_calls-2026111908-r1",
        quantity=Decimal(5),
        value=5,
        customer_id="cus_acme",
        event_name="api_calls",
        timestamp=at(19, 8),
        status=UsageReport.Status.FAILED,
        error_code="resource_missing",
        error_message="No such customer: 'cus_acme'\nrequest id req_1",
    )
    old_failure = UsageReportFactory(
        tenant=acme,
        meter=api_calls,
        hour=at(18, 8),
        revision=1,
        identifier="acme-api_calls-2026111808-r1",
        quantity=Decimal(5),
        value=5,
        customer_id="cus_acme",
        event_name="api_calls",
        timestamp=at(18, 8),
        status=UsageReport.Status.FAILED,
    )
    UsageReport.objects.filter(pk=failed_report.pk).update(updated_at=at(19, 9))
    UsageReport.objects.filter(pk=old_failure.pk).update(updated_at=at(18, 9))  # failed the day before

    webhook = WebhookEventFactory(
        stripe_id="evt_failed",
        type="invoice.paid",
        payload={"id": "evt_failed"},
        status=WebhookEvent.Status.FAILED,
        error="customer cus_missing not found\nTraceback (most recent call last): ...",
    )
    processed = WebhookEventFactory(
        stripe_id="evt_ok",
        type="invoice.paid",
        payload={"id": "evt_ok"},
        status=WebhookEvent.Status.PROCESSED,
    )
    WebhookEvent.objects.filter(pk__in=[webhook.pk, processed.pk]).update(updated_at=at(19, 10))

    check = CostCheckRunFactory(
        trigger="beat",
        checked_date=date(2026, 11, 18),
        started_at=at(19, 6),
        status=CostCheckRun.Status.FAILED,
        error="AccessDeniedException: ce:GetCostAndUsage",
    )
    CostCheckRunFactory(
        trigger="command", checked_date=date(2026, 11, 18), started_at=at(19, 7), status="succeeded"
    )
    aggregation = AggregationRunFactory(
        started_at=at(19, 12), status=AggregationRun.Status.FAILED, trigger="beat", error="deadlock detected"
    )
    AggregationRunFactory(started_at=at(19, 13), status=AggregationRun.Status.SUCCEEDED, trigger="beat")

    cost(DAY, "Amazon EC2", "acme", "1.25")
    cost(DAY, "Amazon EC2", "", "0.5")  # unattributed
    cost(DAY, "Amazon S3", "beta", "2")
    cost(DAY, "Amazon S3", "", "0.1234567891")  # unattributed, Cost Explorer's ten decimals
    cost(date(2026, 11, 18), "Amazon EC2", "", "99")  # another day
    cost(DAY, "Amazon EC2", "", "77", metric="AmortizedCost")  # another metric
    return {"check": check, "aggregation": aggregation}


EXPECTED_CSV = """\
day,section,item,name,quantity,events,amount,currency,at,detail
2026-11-19,usage,api_calls,API calls,2650,2650,13.00,USD,,call
2026-11-19,usage,storage_gb,Storage,250,2,,,,GB
2026-11-19,tenant,beta,Beta,,2002,10.00,USD,,
2026-11-19,tenant,acme,Acme,,600,3.00,USD,,
2026-11-19,tenant,freebie,Freebie,,50,,,,
2026-11-19,revenue,day,estimated revenue of the day,,,13.00,USD,,
2026-11-19,revenue,month_to_date,estimated revenue of the month to the end of the day,,,18.50,USD,,
2026-11-19,failures,usage_report,Usage reports to Stripe failed,1,,,,,
2026-11-19,failures,webhook_event,Stripe webhook events failed,1,,,,,
2026-11-19,failures,cost_check,Cost checks failed or completed with errors,1,,,,,
2026-11-19,failures,aggregation,Aggregation runs failed,1,,,,,
2026-11-19,failure,usage_report,acme-api_calls-2026111908-r1,,,,,2026-11-19T09:00:00+00:00,\
acme api_calls 2026-11-19 08:00: resource_missing: No such customer: 'cus_acme'
2026-11-19,failure,webhook_event,evt_failed,,,,,2026-11-19T10:00:00+00:00,\
invoice.paid: customer cus_missing not found
2026-11-19,failure,cost_check,cost check run {check} (2026-11-18),,,,,2026-11-19T06:00:00+00:00,\
AccessDeniedException: ce:GetCostAndUsage
2026-11-19,failure,aggregation,aggregation run {aggregation},,,,,2026-11-19T12:00:00+00:00,deadlock detected
2026-11-19,cost_by_service,Amazon EC2,,,,1.75,USD,,
2026-11-19,cost_by_service,Amazon S3,,,,2.1234567891,USD,,
2026-11-19,cost,unattributed,cost with no tenant tag,,,0.6234567891,USD,,
2026-11-19,cost,total,all services,,,3.8734567891,USD,,
"""


def expected_csv(rows) -> str:
    text = EXPECTED_CSV.format(check=rows["check"].pk, aggregation=rows["aggregation"].pk)
    return text.replace("\n", "\r\n")  # the csv module's line ends (RFC 4180)


# --- Figures and CSV ------------------------------------------------------------------------------


def test_the_report_has_the_days_usage_revenue_failures_and_costs(day_of_business):
    report = daily_report_build(day=DAY)

    assert [(m.code, m.quantity, m.events, m.revenue) for m in report.meters] == [
        ("api_calls", Decimal(2650), 2650, [Money(Decimal("13.00"), "USD")]),
        ("storage_gb", Decimal(250), 2, []),
    ]
    assert report.events_total == 2652
    assert [(t.slug, t.events, t.revenue) for t in report.top_tenants] == [
        ("beta", 2002, [Money(Decimal("10.00"), "USD")]),
        ("acme", 600, [Money(Decimal("3.00"), "USD")]),
        ("freebie", 50, []),
    ]
    # The day adds 600 + 2000 calls at half a cent; the month holds 1000 + 100 + 600 + 2000 calls.
    assert report.revenue_day == [Money(Decimal("13.00"), "USD")]
    assert report.revenue_month_to_date == [Money(Decimal("18.50"), "USD")]
    assert report.failure_counts == {"usage_report": 1, "webhook_event": 1, "cost_check": 1, "aggregation": 1}
    assert [(f.kind, f.reference) for f in report.failures] == [
        ("usage_report", "acme-api_calls-2026111908-r1"),
        ("webhook_event", "evt_failed"),
        ("cost_check", f"cost check run {day_of_business['check'].pk} (2026-11-18)"),
        ("aggregation", f"aggregation run {day_of_business['aggregation'].pk}"),
    ]
    assert [(line.service, line.amount.amount) for line in report.cost_by_service] == [
        ("Amazon EC2", Decimal("1.75")),
        ("Amazon S3", Decimal("2.1234567891")),
    ]
    assert report.cost_unattributed == Money(Decimal("0.6234567891"), "USD")
    assert report.cost_total == Money(Decimal("3.8734567891"), "USD")


def test_the_csv_is_exact(day_of_business):
    assert daily_report_csv(daily_report_build(day=DAY)) == expected_csv(day_of_business)


def test_a_day_on_a_graduated_price_is_what_it_added_to_the_month(db):
    """Tiers are monthly: the day's revenue is the month-to-date estimate after the day minus before it."""
    meter = MeterFactory(code="api_calls", name="API calls", aggregation="count")
    tenant = TenantFactory(name="Acme", slug="acme")
    tiers = [
        {"up_to": 1000, "unit_amount": "1", "flat_amount": "500"},  # 5.00 once, then a cent a call
        {"up_to": None, "unit_amount": "0.1", "flat_amount": "0"},  # a tenth of a cent beyond 1,000
    ]
    PriceFactory(meter=meter, plan="metered", model="graduated", tiers=tiers)
    aggregate(tenant, meter, at(18, 12), events=800)  # before: 5.00 + 8.00 = 13.00
    aggregate(tenant, meter, at(19, 12), events=700)  # after: 5.00 + 10.00 + 0.50 = 15.50

    report = daily_report_build(day=DAY)

    assert report.revenue_day == [Money(Decimal("2.50"), "USD")]
    assert report.revenue_month_to_date == [Money(Decimal("15.50"), "USD")]


def test_an_empty_day_reports_zeros(db):
    report = daily_report_build(day=DAY)
    assert report.meters == []
    assert report.top_tenants == []
    assert report.revenue_day == []
    assert report.failures_total == 0
    assert report.cost_total == Money(Decimal(0), "USD")
    assert daily_report_csv(report).splitlines()[-2:] == [
        "2026-11-19,cost,unattributed,cost with no tenant tag,,,0.00,USD,,",
        "2026-11-19,cost,total,all services,,,0.00,USD,,",
    ]


def test_a_bad_costwatch_setting_is_reported_not_raised(db, settings):
    settings.COSTWATCH_CURRENCY = "dollars"
    report = daily_report_build(day=DAY)
    assert report.cost_error == "COSTWATCH_CURRENCY must be a 3-letter code, got 'DOLLARS'"
    assert daily_report_csv(report).splitlines()[-1] == (
        "2026-11-19,cost,error,,,,,,,\"COSTWATCH_CURRENCY must be a 3-letter code, got 'DOLLARS'\""
    )


# --- E-mail ---------------------------------------------------------------------------------------


@freeze_time(NOW)
def test_it_emails_text_html_and_the_csv_to_the_operators(day_of_business, settings):
    settings.OPERATOR_EMAILS = ["ops@example.com", "finance@example.com"]

    delivery = daily_report_send(day=DAY)

    assert delivery.status == "sent"
    assert delivery.recipients == ["ops@example.com", "finance@example.com"]
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == ["ops@example.com", "finance@example.com"]
    assert email.subject == "Daily usage report 2026-11-19: 2,652 events, 13.00 USD estimated, 4 failure(s)"
    assert "api_calls: 2650 call from 2,650 events; estimated 13.00 USD" in email.body
    assert "unattributed (no tenant tag): 0.62 USD" in email.body
    [(html, mimetype)] = email.alternatives
    assert mimetype == "text/html"
    assert "evt_failed" in html
    assert "3.87 USD" in html
    [(filename, content, csv_type)] = email.attachments
    assert (filename, csv_type) == ("daily-report-2026-11-19.csv", "text/csv")
    assert content == expected_csv(day_of_business)


@freeze_time(NOW)
def test_the_days_report_is_sent_once_and_the_record_says_when_and_to_whom(day_of_business, settings):
    settings.OPERATOR_EMAILS = ["ops@example.com"]

    first = daily_report_send()  # yesterday, as Beat sends it
    again = daily_report_send(day=DAY)

    assert first.day == DAY
    assert first.status == "sent"
    assert again.status == "already_sent"
    assert again.message == (
        "the report for 2026-11-19 was already sent at 2026-11-20T07:00:00+00:00 to ops@example.com"
    )
    assert again.csv_sha256 == first.csv_sha256
    assert len(mail.outbox) == 1
    assert daily_report_send(day=DAY, force=True).status == "sent"
    assert len(mail.outbox) == 2


def test_without_operator_emails_nothing_is_sent_and_it_says_so(db):
    delivery = daily_report_send(day=DAY)
    assert delivery.status == "no_recipients"
    assert delivery.message == "no report for 2026-11-19 sent: OPERATOR_EMAILS is empty"
    assert mail.outbox == []


def test_a_failed_send_can_be_retried(day_of_business, settings, monkeypatch):
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    monkeypatch.setattr(
        "django.core.mail.EmailMultiAlternatives.send", lambda self: (_ for _ in ()).throw(OSError)
    )
    with pytest.raises(OSError):
        daily_report_send(day=DAY)
    monkeypatch.undo()
    assert daily_report_send(day=DAY).status == "sent"


# --- Command --------------------------------------------------------------------------------------


def test_the_command_sends_the_report(day_of_business, settings):
    settings.OPERATOR_EMAILS = ["ops@example.com"]
    out = StringIO()
    call_command("send_daily_report", "--date", "2026-11-19", stdout=out)
    assert out.getvalue() == "the report for 2026-11-19 was sent to ops@example.com\n"
    assert len(mail.outbox) == 1


def test_the_command_writes_the_csv_to_a_file(day_of_business, tmp_path):
    target = tmp_path / "report.csv"
    out = StringIO()
    call_command("send_daily_report", "--date", "2026-11-19", "--csv", str(target), stdout=out)
    assert out.getvalue() == f"wrote the report for 2026-11-19 to {target}\n"
    assert target.read_bytes().decode() == expected_csv(day_of_business)
    assert mail.outbox == []


def test_the_command_without_addresses_says_so(db):
    out = StringIO()
    call_command("send_daily_report", "--date", "2026-11-19", stdout=out)
    assert out.getvalue() == "no report for 2026-11-19 sent: OPERATOR_EMAILS is empty\n"


def test_a_bad_date_is_one_line(db):
    with pytest.raises(
        CommandError, match="argument --date: must be a date such as 2026-11-20, got '2026-13-01'"
    ):
        call_command("send_daily_report", "--date", "2026-13-01")


def test_a_bad_date_from_the_command_line_is_one_line_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "manage.py", "send_daily_report", "--date", "yesterday"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "manage.py send_daily_report: error: argument --date: "
        "must be a date such as 2026-11-20, got 'yesterday'"
    ]


def test_an_unwritable_csv_file_is_one_line(db, tmp_path):
    with pytest.raises(
        CommandError, match=r"^--csv: cannot write .*missing/report.csv: No such file or directory$"
    ):
        call_command(
            "send_daily_report", "--date", "2026-11-19", "--csv", str(tmp_path / "missing" / "report.csv")
        )


# --- Admin ----------------------------------------------------------------------------------------

PAGE = "/admin/reports/daily/"
CSV = "/admin/reports/daily.csv"


def test_staff_download_the_csv(admin_client, day_of_business):
    response = admin_client.get(CSV, {"date": "2026-11-19"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="daily-report-2026-11-19.csv"'
    assert response.content.decode() == expected_csv(day_of_business)


@freeze_time(NOW)
def test_the_page_shows_the_summary_a_date_picker_and_the_download_link(admin_client, day_of_business):
    response = admin_client.get(PAGE, {"date": "2026-11-19"})
    assert response.status_code == 200
    html = response.content.decode()
    assert '<input type="date" id="report-date" name="date" value="2026-11-19" max="2026-11-20">' in html
    assert 'href="/admin/reports/daily.csv?date=2026-11-19"' in html
    for figure in ("13.00 USD", "18.50 USD", "3.87 USD"):
        assert figure in html
    assert (
        f'href="/admin/stripe_sync/webhookevent/{WebhookEvent.objects.get(stripe_id="evt_failed").pk}/change/"'
        in html
    )


@freeze_time(NOW)
def test_the_page_defaults_to_yesterday_and_rejects_a_bad_date(admin_client, db):
    assert 'value="2026-11-19"' in admin_client.get(PAGE).content.decode()
    response = admin_client.get(PAGE, {"date": "19/11/2026"})
    assert response.status_code == 400
    assert "date: must be a date such as 2026-11-20, got &#x27;19/11/2026&#x27;" in response.content.decode()
    assert admin_client.get(CSV, {"date": "nope"}).status_code == 400


def test_the_admin_index_links_to_the_report(admin_client, db):
    assert 'href="/admin/reports/daily/"' in admin_client.get("/admin/").content.decode()


@pytest.mark.parametrize("url", [PAGE, CSV])
def test_only_staff_see_the_report(client, django_user_model, url):
    assert client.get(url).status_code == 302  # to the admin login
    user = django_user_model.objects.create_user("customer", password="pw")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Beat and the worker --------------------------------------------------------------------------


def test_beat_sends_the_report_daily_at_seven_utc():
    task = beat_task("billing_platform.send_daily_report")
    assert task.enabled
    crontab = task.crontab
    assert (
        crontab.minute,
        crontab.hour,
        crontab.day_of_month,
        crontab.month_of_year,
        crontab.day_of_week,
    ) == (
        "0",
        "7",
        "*",
        "*",
        "*",
    )
    assert str(crontab.timezone) == "UTC"


class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP for Django's backend: every message's DATA goes to the server's `messages`."""

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self):
        self.reply("220 sink")
        while line := self.rfile.readline():
            command = line.decode().strip().upper()
            if command.startswith("DATA"):
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                self.server.messages.append(data.decode())
                self.reply("250 queued")
            elif command.startswith("QUIT"):
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp_sink():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.worker
@pytest.mark.redis
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_task_emails_the_report_from_a_real_worker(worker_env, tmp_path, smtp_sink):
    """A worker of its own on a queue of its own, so that its e-mail settings come from its environment;
    the mail goes over SMTP to a sink in this test, as it would to a real server."""
    MeterFactory(code="api_calls", name="API calls", unit="call", aggregation="count")
    env = {
        **worker_env,
        "OPERATOR_EMAILS": "ops@example.com",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_sink.server_address[1]),
    }
    # The worker's cache is the test Redis (Django's RedisCache key "<prefix>:<version>:<key>"), where the
    # record of an earlier run's send would stop this one.
    sent_record = redis.Redis.from_url(worker_env["REDIS_URL"])
    sent_record.delete("bp:1:daily-report:2026-11-19")
    proc = start_celery_worker(
        env=env, log=tmp_path / "worker.log", name="daily-report", queues="daily-report"
    )
    try:
        result = send_daily_report.apply_async(kwargs={"day": "2026-11-19"}, queue="daily-report").get(
            timeout=60
        )
    finally:
        stop_celery_worker(proc)
        sent_record.delete("bp:1:daily-report:2026-11-19")
    assert result["status"] == "sent"
    assert result["recipients"] == ["ops@example.com"]
    [message] = smtp_sink.messages
    assert "Subject: Daily usage report 2026-11-19: 0 events, - estimated, 0 failure(s)" in message
    assert 'filename="daily-report-2026-11-19.csv"' in message
