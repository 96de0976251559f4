"""What each worker thread holds right now: the registry record's ``in_hand``, the Busy section of the
admin page, the health JSON's worker details and the ``dramatiq.worker.oldest_message.age`` gauge.

Real ``Worker`` threads run actors that block on an event the test controls (as a call without timeout
would). The record is written by the registry's beat (every BEAT seconds here); the messages in hand
come from the worker's own hooks. RabbitMQ has no registry store, so there only the in-process state
and the page's explanation are checked.
"""

from __future__ import annotations

import html as html_module
import json
import os
import re
import socket
import threading
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import SkipMessage
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.in_hand import ARGS_CHARS
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import redis_key

from .conftest import spans_named
from .test_metrics import points

STALL = 0.5
BEAT = 0.1
URL = "/admin/dramatiq_otel/monitoring/"
TRACE_URL = "http://localhost:16686/trace/{trace_id}"

pytestmark = [pytest.mark.django_db]


def hide_secret(actor_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """A REDACT_ARGS hook: the ``secret`` keyword never shows."""
    return args, {**kwargs, "secret": "***"} if "secret" in kwargs else kwargs


@pytest.fixture
def capture_args() -> bool:
    return True


@pytest.fixture
def instrumented(instrument, capture_args):
    return instrument(stall_timeout=STALL, queue_metrics_interval=0, capture_args=capture_args)


@pytest.fixture
def gate(start_worker):
    """Set at the end whatever happens, before the workers are stopped."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def otel_middleware(broker):
    (middleware,) = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
    middleware._registry.interval = BEAT  # beat often: the test waits for the record
    return middleware


@pytest.fixture
def hold(broker, queue_name, gate, otel_middleware):
    """An actor that blocks until the gate opens (bounded, so a failing test cannot hang)."""

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def hold(label, secret=None):
        gate.wait(60)

    return hold


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
    return value


def only_worker(broker, **timeouts):
    workers = reader_for_broker(broker, **timeouts).read().workers
    return workers[0] if len(workers) == 1 else None


def raw_record(broker) -> dict[str, Any]:
    (raw,) = broker.client.hgetall(redis_key(broker.namespace)).values()
    return json.loads(raw)


def rows(html: str, table_id: str) -> list[tuple[str, list[str]]]:
    """(class of the row, text of each cell) of the body rows of a table."""
    match = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert match, f"no table {table_id}"
    return [
        (
            row_class,
            [
                " ".join(html_module.unescape(re.sub(r"<[^>]+>", "", cell)).split())
                for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            ],
        )
        for row_class, row in re.findall(r'<tr(?: class="([^"]*)")?>(.*?)</tr>', match[1], re.S)
    ]


def trace_ids_by_message(span_exporter, queue_name) -> dict[str, str]:
    return {
        span.attributes["messaging.message.id"]: trace.format_trace_id(span.context.trace_id)
        for span in spans_named(span_exporter, f"process {queue_name}")
    }


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_record_lists_the_message_each_thread_holds_with_its_trace_and_arguments(
    broker, queue_name, hold, gate, start_worker, span_exporter
):
    sent = {hold.send(f"job-{i}", secret=f"s{i}").message_id: i for i in range(3)}
    worker = start_worker(threads=2)
    threads = {thread.native_id: thread.name for thread in worker.workers}

    busy = wait_for(lambda: (w := only_worker(broker)) is not None and len(w.in_hand) == 2 and w)
    for _ in range(5):  # bounded by the threads, whatever is queued
        assert len(raw_record(broker)["in_hand"]) == 2
        time.sleep(BEAT)
    first, second = busy.in_hand
    assert first.since <= second.since <= busy.last_seen
    assert {first.message_id, second.message_id} < set(sent)
    for message in busy.in_hand:
        i = sent[message.message_id]
        assert (message.actor, message.queue, message.retries, message.time_limit) == (
            "hold",
            queue_name,
            0,
            600.0,
        )
        assert threads[message.thread_id] == message.thread
        assert message.running_for == round(busy.last_seen - message.since, 3) and not message.over_time_limit
        assert re.fullmatch(r"[0-9a-f]{32}", message.trace_id) and message.sampled
        assert (message.args, message.kwargs) == ([f"job-{i}"], {"secret": f"s{i}"})
    assert {m.thread_id for m in busy.in_hand} == set(threads)
    held = {message.message_id: message.trace_id for message in busy.in_hand}

    gate.set()
    done = wait_for(lambda: (w := only_worker(broker)) is not None and w.finished == 3 and w)
    assert done.in_hand == () and raw_record(broker)["in_hand"] == []
    # the trace ids are those of the process spans of these messages
    traced = trace_ids_by_message(span_exporter, queue_name)
    assert held == {message_id: traced[message_id] for message_id in held}


@pytest.mark.parametrize("broker_kind", ["redis"])
@pytest.mark.parametrize("capture_args", [False])
def test_without_capture_args_the_record_carries_no_arguments(broker, queue_name, hold, gate, start_worker):
    hold.send("job", secret="hunter2")
    start_worker(threads=1)
    wait_for(lambda: (w := only_worker(broker)) is not None and len(w.in_hand) == 1)
    (entry,) = raw_record(broker)["in_hand"]
    assert "hunter2" not in json.dumps(entry)
    assert set(entry) == {
        "thread",
        "thread_id",
        "actor",
        "queue",
        "message_id",
        "retries",
        "since",
        "time_limit",
        "trace_id",
        "sampled",
    }


class SkipSkipped(dramatiq.Middleware):
    """Skips messages of the actor ``skipped`` (after the OpenTelemetry middleware's before-hook)."""

    def before_process_message(self, broker, message):
        if message.actor_name == "skipped":
            raise SkipMessage()


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_the_hand_is_emptied_on_every_path(
    broker_kind, broker, queue_name, gate, start_worker, otel_middleware
):
    broker.add_middleware(SkipSkipped())
    seen: list[int] = []

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def blocked():
        gate.wait(60)

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def fails():
        raise ValueError("boom")

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def skipped():
        seen.append(1)

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def succeeds():
        pass

    worker = start_worker(threads=1)
    registry = otel_middleware._registry._registries[id(worker)]
    message = blocked.send()
    entries = wait_for(lambda: registry.in_hand.entries())  # in-process: also where no store exists
    assert [(e["actor"], e["message_id"]) for e in entries] == [("blocked", message.message_id)]
    gate.set()
    for actor in (fails, skipped, succeeds):
        actor.send()
    broker.join(queue_name, timeout=60_000)
    worker.join()
    wait_for(lambda: registry.progress.fields()["finished"] == 4)
    assert registry.in_hand.held == {} and registry.in_hand.entries() == [] and seen == []
    if broker_kind == "redis":
        wait_for(lambda: (w := only_worker(broker)) is not None and w.finished == 4 and w.in_hand == ())


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_busy_section_marks_a_stalled_worker_and_a_message_over_its_time_limit(
    client, django_user_model, broker, queue_name, gate, start_worker, health, otel_middleware, span_exporter
):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    health(
        STALL_TIMEOUT=STALL,
        TRACE_URL=TRACE_URL,
        REDACT_ARGS=hide_secret,
        INSTRUMENT_OPTIONS={"capture_args": True},
    )

    @dramatiq.actor(queue_name=queue_name, max_retries=0, time_limit=1000)
    def quick_sync(account, secret=None):
        gate.wait(60)  # stuck past its 1 s time limit: TimeLimit cannot interrupt a blocking wait

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def slow_report(month):
        gate.wait(60)

    sync = quick_sync.send(42, secret="hunter2")
    report = slow_report.send("2026-11")
    start_worker(threads=2)

    html = wait_for(
        lambda: (
            'class="dramatiq-busy stalled over-time-limit"' in (h := client.get(URL).content.decode()) and h
        )
    )
    assert "hunter2" not in html
    assert re.search(r"<th>Arguments</th>", html)
    by_actor = {cells[3]: (row_class, cells) for row_class, cells in rows(html, "busy")}
    assert set(by_actor) == {"quick_sync", "slow_report"}
    sync_class, sync_cells = by_actor["quick_sync"]
    report_class, report_cells = by_actor["slow_report"]
    assert sync_class == "dramatiq-busy stalled over-time-limit"
    assert report_class == "dramatiq-busy stalled"
    host, pid, thread, actor, queue, running, note, retries, message_id, _trace, arguments = sync_cells
    assert (host, pid, actor, queue, retries, message_id) == (
        socket.gethostname(),
        str(os.getpid()),
        "quick_sync",
        queue_name,
        "0",
        sync.message_id,
    )
    assert thread.startswith("Thread-") and re.fullmatch(r"\d+ s", running)
    assert arguments == "(42,), {'secret': '***'}"
    assert note == "worker stalled over its time limit (1 s)"
    assert report_cells[8] == report.message_id and report_cells[10] == "('2026-11',)"
    assert report_cells[6] == "worker stalled"
    links = dict(
        re.findall(r'<a class="trace-link" href="([^"]+)" rel="noreferrer">([0-9a-f]{12})…</a>', html)
    )

    gate.set()
    html = wait_for(
        lambda: "No worker thread holds a message." in (h := client.get(URL).content.decode()) and h
    )
    traced = trace_ids_by_message(span_exporter, queue_name)
    assert sorted(links) == sorted(TRACE_URL.format(trace_id=traced[m.message_id]) for m in (sync, report))
    for href, short in links.items():  # the cell shows the start of the trace id the link leads to
        assert href.rsplit("/", 1)[1].startswith(short)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_arguments_too_long_for_the_record_are_left_out_and_said_so(
    client, django_user_model, broker, queue_name, hold, gate, start_worker, health
):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    health(INSTRUMENT_OPTIONS={"capture_args": True})
    message = hold.send("x" * (ARGS_CHARS + 1))
    start_worker(threads=1)

    wait_for(lambda: (w := only_worker(broker)) is not None and len(w.in_hand) == 1)
    (entry,) = raw_record(broker)["in_hand"]
    assert entry["args_omitted"] is True and "args" not in entry and "xxxx" not in json.dumps(entry)
    html = client.get(URL).content.decode()
    ((_, cells),) = rows(html, "busy")
    assert cells[8] == message.message_id and cells[10] == "(too long to record)"


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_stale_workers_messages_are_not_listed_as_busy(broker, queue_name, hold, gate, start_worker):
    from opentelemetry_instrumentation_dramatiq_cfg.django.busy import busy_rows
    from opentelemetry_instrumentation_dramatiq_cfg.django.conf import health_settings

    hold.send("job")
    start_worker(threads=1)
    live = wait_for(lambda: (w := only_worker(broker)) is not None and len(w.in_hand) == 1 and w)
    assert [row.message for row in busy_rows([live], health_settings())[0]] == list(live.in_hand)
    # read as if its last beat were older than the worker timeout: its record proves nothing now
    stale = only_worker(broker, worker_timeout=1e-6)
    assert stale.status == "stale" and len(stale.in_hand) == 1
    assert busy_rows([stale], health_settings()) == ([], 0, False)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_an_active_worker_busy_rows_do_not_stand_out_and_arguments_follow_the_pages_rule(
    client, django_user_model, broker, queue_name, hold, gate, start_worker, health
):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    health()  # the page's capture_args is off (the worker's is on): no Arguments column, no link
    message = hold.send("job", secret="hunter2")
    start_worker(threads=2)

    html = wait_for(lambda: message.message_id in (h := client.get(URL).content.decode()) and h)
    ((row_class, cells),) = rows(html, "busy")
    assert row_class == "dramatiq-busy"
    assert len(cells) == 10 and cells[3:5] == ["hold", queue_name] and cells[6] == ""
    assert "<th>Arguments</th>" not in html and "hunter2" not in html and "trace-link" not in html


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_health_details_list_what_a_stalled_worker_holds_without_arguments(
    client, broker, queue_name, hold, gate, start_worker, health
):
    health(DETAILS="public", STALL_TIMEOUT=STALL)
    message = hold.send("job", secret="hunter2")
    start_worker(threads=1)

    body = wait_for(lambda: (b := client.get("/health/").json())["status"] == "degraded" and b)
    (worker,) = body["workers"]
    (held,) = worker["in_hand"]
    assert worker["status"] == "stalled"
    assert held["message_id"] == message.message_id and (held["actor"], held["queue"]) == ("hold", queue_name)
    # in hand as of the worker's last beat (the stall is judged by the reader's clock)
    assert (
        0 < held["running_for"] <= worker["busy_for"]
        and held["time_limit"] == 600.0
        and held["over_time_limit"] is False
    )
    assert re.fullmatch(r"[0-9a-f]{32}", held["trace_id"]) and held["thread"].startswith("Thread-")
    assert "hunter2" not in json.dumps(body) and "args" not in held

    gate.set()
    body = wait_for(lambda: (b := client.get("/health/").json())["status"] == "healthy" and b)
    assert body["workers"][0]["in_hand"] == []


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_oldest_message_in_hand_gauge_per_worker_process(
    broker, queue_name, hold, gate, start_worker, metric_reader
):
    def ages() -> dict[tuple[str, str], float]:
        return {
            (p.attributes["worker_id"], p.attributes["host"]): p.value
            for p in points(metric_reader, "dramatiq.worker.oldest_message.age")
        }

    start_worker(threads=2)
    idle = wait_for(lambda: ages())
    ((worker_id, host),) = idle
    assert host == socket.gethostname() and idle[worker_id, host] == 0
    hold.send("first")
    first = wait_for(lambda: (a := ages().get((worker_id, host), 0)) > 0 and a)
    hold.send("second")  # younger: the gauge stays the age of the oldest
    later = wait_for(lambda: (a := ages()[worker_id, host]) > first + 2 * BEAT and a)
    record = only_worker(broker)
    assert later <= max(m.running_for for m in record.in_hand) and len(record.in_hand) == 2
    gate.set()
    wait_for(lambda: ages()[worker_id, host] == 0)


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_on_rabbitmq_the_busy_section_says_why_it_is_empty(client, django_user_model, broker, health):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    html = client.get(URL).content.decode()
    assert re.search(r'id="busy-unavailable">This broker has no worker registry', html)
    assert '<table id="busy">' not in html
