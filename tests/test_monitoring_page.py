"""The admin monitoring page: access, content from one broker read, records, links, escaping, cost."""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import timedelta

import dramatiq
import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from opentelemetry_instrumentation_dramatiq_cfg.django.conf import HealthSettings
from opentelemetry_instrumentation_dramatiq_cfg.django.monitoring import ROWS, ago
from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord

URL = "/admin/dramatiq_otel/monitoring/"
TRACE_URL = "http://localhost:16686/trace/{trace_id}"

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    return client


def table(html: str, table_id: str) -> list[list[str]]:
    """The text of each body row's cells of the table with this id (white space collapsed)."""
    match = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert match, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", match[1], re.S)
    return [
        [
            " ".join(re.sub(r"<[^>]+>", "", cell).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def record(i: int = 0, **fields) -> TaskRecord:
    values = {
        "actor_name": "send_invoice",
        "queue_name": "billing",
        "duration": 0.1,
        "outcome": "success",
        "retries": 0,
        "message_id": f"m{i}",
        "trace_id": f"{i:032x}",
        "timestamp": timezone.now() - timedelta(seconds=i),
    }
    values.update(fields)
    return TaskRecord(**values)


def test_anonymous_users_are_sent_to_the_admin_login(client, health):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_logged_in_user_who_is_not_staff_gets_no_data(
    client, django_user_model, broker, queue_name, health
):
    broker.declare_queue(queue_name)
    client.force_login(django_user_model.objects.create_user("visitor"))
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert queue_name not in response.content.decode()


def test_the_admin_index_links_the_page_under_dramatiq_monitoring(staff_client, health):
    html = staff_client.get("/admin/").content.decode()
    section = html[html.index("Dramatiq monitoring") :]
    assert f'<a href="{URL}"' in section[:2000]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_queues_sorted_by_pending_with_the_health_views_status_from_one_round_trip(
    staff_client, broker, namespace, health, record_redis_writes
):
    health(DETAILS="public")
    counts = {f"{namespace}-a": 1, f"{namespace}-b": 3, f"{namespace}-c": 0}
    for name, pending in counts.items():
        broker.declare_queue(name)
        for _ in range(pending):
            broker.enqueue(dramatiq.Message(queue_name=name, actor_name="a", args=(), kwargs={}, options={}))
    for i in range(50):
        broker.declare_queue(f"{namespace}-z{i}")
    staff_client.get(URL)  # connects and warms up
    writes = record_redis_writes()
    response = staff_client.get(URL)
    assert len(writes) == 1

    html = response.content.decode()
    rows = table(html, "queues")
    assert [row[:4] for row in rows[:3]] == [
        [f"{namespace}-b", "3", "0", "0"],
        [f"{namespace}-a", "1", "0", "0"],
        [f"{namespace}-c", "0", "0", "0"],
    ]
    assert len(rows) == 53
    health_body = staff_client.get("/health/").json()
    assert health_body["status"] == "degraded"
    assert re.search(r'id="status" class="dramatiq-status degraded">degraded<', html)
    assert re.search(r'id="total-pending">4<', html)
    no_worker = "No worker registered. Workers register through the OpenTelemetry middleware or "
    assert table(html, "workers") == [[no_worker + "WorkerRegistryMiddleware."]]
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_running_worker_is_listed_active(staff_client, broker, queue_name, health, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    start_worker(threads=2)
    (row,) = table(staff_client.get(URL).content.decode(), "workers")
    host, pid, queues, threads, last_seen, state = row
    assert (host, pid, queues, threads, state) == (
        socket.gethostname(),
        str(os.getpid()),
        queue_name,
        "2",
        "active",
    )
    assert last_seen.endswith(("s ago", "just now"))
    assert 'class="dramatiq-status healthy"' in staff_client.get(URL).content.decode()


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_on_rabbitmq_liveness_is_the_consumers_column(staff_client, broker, queue_name, health, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    start_worker()
    wait_for_page = staff_client.get(URL).content.decode()
    deadline = time.monotonic() + 30
    while 'class="dramatiq-status healthy"' not in wait_for_page:
        assert time.monotonic() < deadline, "the worker's consumer never showed"
        time.sleep(0.1)
        wait_for_page = staff_client.get(URL).content.decode()
    rows = {row[0]: row[1:] for row in table(wait_for_page, "queues")}
    assert rows[queue_name] == ["0", "0", "0", "\N{EN DASH}", "1"]  # in flight: unknown
    assert "This broker has no worker registry" in wait_for_page and 'id="workers"' not in wait_for_page


def test_a_broker_that_is_down_shows_unhealthy_and_the_error_never_a_traceback(staff_client, health):
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url="redis://user:hunter2-secret@127.0.0.1:1/0")
    broker.declare_queue("q")
    dramatiq.set_broker(broker)
    health(TIMEOUT=0.5)
    response = staff_client.get(URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="dramatiq-status unhealthy">unhealthy<' in html
    assert "127.0.0.1:1" in html and "hunter2" not in html and "Traceback" not in html
    assert 'id="queues"' not in html


def test_disabled(staff_client, health):
    health(ENABLED=False)
    html = staff_client.get(URL).content.decode()
    assert 'class="dramatiq-status disabled">disabled<' in html
    assert "Task system is disabled" in html


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_recent_failures_and_slowest_attempts_link_to_their_traces(staff_client, broker, health):
    health(TRACE_URL=TRACE_URL)
    TaskRecord.objects.bulk_create(
        [
            record(1, outcome="failed", retries=3, exception_type="ValueError", exception_message="bad"),
            record(2, outcome="handled", exception_type="shop.Refused", exception_message="no"),
            record(3, outcome="retry", exception_type="ValueError", exception_message="later"),
            record(4, duration=9.5, trace_id=""),
            record(5, duration=0.2, timestamp=timezone.now() - timedelta(days=2)),  # too old to be "slow"
        ]
    )
    html = staff_client.get(URL).content.decode()
    failures = table(html, "failures")
    assert [row[:5] + row[6:7] for row in failures] == [
        ["send_invoice", "billing", "failed", "3", "0.100 s", "ValueError: bad"],
        ["send_invoice", "billing", "handled", "0", "0.100 s", "shop.Refused: no"],
    ]
    assert f'href="http://localhost:16686/trace/{1:032x}"' in html
    slowest = table(html, "slowest")
    assert [row[4] for row in slowest] == ["9.500 s", "0.100 s", "0.100 s", "0.100 s"]

    health()  # no TRACE_URL: ids, no links
    html = staff_client.get(URL).content.decode()
    assert "trace-link" not in html and f"{1:032x}"[:12] in html


def test_records_admin_links_trace_ids(staff_client, health):
    record(7).save()
    health(TRACE_URL=TRACE_URL)
    html = staff_client.get("/admin/dramatiq_otel_records/taskrecord/").content.decode()
    assert f'<a class="trace-link" href="http://localhost:16686/trace/{7:032x}" rel="noreferrer">' in html
    health()
    html = staff_client.get("/admin/dramatiq_otel_records/taskrecord/").content.decode()
    assert "trace-link" not in html and f"{7:032x}" in html
    assert staff_client.get("/admin/dramatiq_otel_records/taskrecord/add/").status_code == 403


def test_unreadable_records_show_the_error_and_the_rest_of_the_page(staff_client, health):
    with connection.cursor() as cursor:  # as if the records app were installed but not migrated
        cursor.execute("ALTER TABLE dramatiq_otel_records_taskrecord RENAME TO not_migrated_yet")
    response = staff_client.get(URL)
    html = response.content.decode()
    assert response.status_code == 200 and "Traceback" not in html
    assert re.search(
        r'id="records-error">Task records unreadable: ProgrammingError: relation .*taskrecord', html
    )
    assert 'id="status"' in html


def test_trace_urls_only_for_well_formed_trace_ids():
    config = HealthSettings(TRACE_URL='https://grafana/explore?left={"query":"{trace_id}"}')
    assert config.trace_url("ab" * 16) == 'https://grafana/explore?left={"query":"' + "ab" * 16 + '"}'
    for bad in (None, "", "xyz", "AB" * 16, "ab" * 16 + '"><script>'):
        assert config.trace_url(bad) is None
    assert HealthSettings().trace_url("ab" * 16) is None


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_user_controlled_text_is_escaped(staff_client, broker, namespace, health):
    evil = "<script>alert(1)</script>"
    broker.declare_queue(f"{namespace}-{evil}")
    record(
        1, actor_name=evil, queue_name=evil, outcome="failed", exception_type="X", exception_message=evil
    ).save()
    html = staff_client.get(URL).content.decode()
    assert "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # queue, actor, queue, error (+ title)


@pytest.mark.parametrize("broker_kind", ["stub"])
@pytest.mark.parametrize("count", [10, 1000])
def test_sql_queries_do_not_grow_with_records_or_queues(staff_client, broker, health, count):
    TaskRecord.objects.bulk_create(
        [record(i, outcome="failed" if i % 3 else "success", duration=i / 100) for i in range(count)]
    )
    for i in range(100):
        broker.declare_queue(f"q{i}")
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(URL)
    assert response.status_code == 200
    # session, user, recent failures, slowest attempts (and the savepoint around the last two)
    statements = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 4, statements
    assert len(queries) <= 6
    failed = sum(1 for i in range(count) if i % 3)
    assert len(table(response.content.decode(), "failures")) == min(ROWS, failed)


def test_without_the_records_app_the_page_says_how_to_enable_it(staff_client, health, settings, monkeypatch):
    from django.contrib import admin

    monkeypatch.delitem(admin.site._registry, TaskRecord)  # as if its admin.py were never loaded
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if not a.endswith(".records")]
    html = staff_client.get(URL).content.decode()
    assert 'id="records-disabled"' in html and "record_task" in html and 'id="failures"' not in html


def test_auto_refresh_interval_pause_and_off_switch(staff_client, health):
    assert '<meta http-equiv="refresh" content="30">' in staff_client.get(URL).content.decode()
    paused = staff_client.get(URL + "?refresh=0").content.decode()
    assert 'http-equiv="refresh"' not in paused and "Auto-refresh paused" in paused
    health(MONITORING_REFRESH=5)
    assert '<meta http-equiv="refresh" content="5">' in staff_client.get(URL).content.decode()
    health(MONITORING_REFRESH=0)
    off = staff_client.get(URL).content.decode()
    assert 'http-equiv="refresh"' not in off and "Auto-refresh is off" in off


def test_system_checks_report_bad_monitoring_settings(health):
    health(TRACE_URL="localhost:16686/trace/", MONITORING_REFRESH=0.5)
    text = "\n".join(m.msg for m in run_checks() if m.id == "dramatiq_otel.E001")
    assert "TRACE_URL" in text and "MONITORING_REFRESH" in text
    health(TRACE_URL=TRACE_URL, MONITORING_REFRESH=0)
    assert [m for m in run_checks() if m.id == "dramatiq_otel.E001"] == []


def test_ages_in_words():
    assert [ago(s) for s in (0.2, 42, 61, 7300, 90000)] == [
        "just now",
        "42 s ago",
        "1 min ago",
        "2 h ago",
        "1 d ago",
    ]
