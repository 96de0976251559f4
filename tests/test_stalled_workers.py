"""Workers that are alive but not making progress, and the age of the oldest waiting message.

A real ``Worker`` runs actors that block on an event the test controls (as a call without timeout
would): once every thread holds a message with none finished for longer than the stall timeout, the
registry reader, the health view, the admin page and the ``dramatiq.worker.count`` gauge call it
``stalled``; once the event is set and the messages finish, it is ``active`` again. RabbitMQ has no
worker registry (liveness comes from consumer counts), so these run on the StubBroker and Redis.
"""

from __future__ import annotations

import re
import threading
import time

import dramatiq
import pytest

from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker

from .test_metrics import points
from .test_monitoring_page import URL, table

#: Stall timeout of these tests (seconds); the registry beats every BEAT seconds.
STALL = 0.5
BEAT = 0.1

pytestmark = [pytest.mark.parametrize("broker_kind", ["stub", "redis"]), pytest.mark.django_db]


@pytest.fixture
def instrumented(instrument):
    """The middleware with this file's stall timeout and uncached queue gauges."""
    return instrument(stall_timeout=STALL, queue_metrics_interval=0)


@pytest.fixture
def gate(start_worker):
    """The event the blocking actors wait on; set at the end whatever happens (before the workers
    are stopped)."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def blocking(broker, queue_name, gate):
    """An actor that blocks until the gate opens (bounded, so a failing test cannot hang)."""
    for middleware in broker.middleware:
        if isinstance(middleware, OpenTelemetryMiddleware):
            middleware._registry.interval = BEAT  # beat often: the test waits for the record

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def wait_for_gate():
        gate.wait(60)

    return wait_for_gate


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


def test_a_worker_whose_every_thread_is_stuck_is_stalled_until_they_finish(
    broker, queue_name, blocking, gate, start_worker
):
    for _ in range(3):
        blocking.send()
    start_worker(threads=2)

    stalled = wait_for(
        lambda: (w := only_worker(broker, stall_timeout=STALL)) is not None and w.status == "stalled" and w
    )
    assert (stalled.processing, stalled.finished, stalled.threads) == (2, 0, 2)
    assert stalled.busy_for > STALL
    assert stalled.queues == (queue_name,)
    snapshot = reader_for_broker(broker, stall_timeout=STALL).read()
    assert snapshot.stalled_workers == (snapshot.workers[0],)
    assert snapshot.active_workers == 0

    gate.set()
    active = wait_for(
        lambda: (w := only_worker(broker, stall_timeout=STALL)) is not None and w.finished == 3 and w
    )
    assert (active.status, active.processing, active.busy_for) == ("active", 0, 0)


def test_an_idle_worker_with_an_empty_queue_is_never_stalled(broker, queue_name, blocking, start_worker):
    start_worker(threads=2)
    seen = []
    deadline = time.monotonic() + 10 * BEAT
    while time.monotonic() < deadline:  # several beats, read with a stall timeout of zero
        worker = only_worker(broker, stall_timeout=0.0)
        if worker is not None:
            seen.append((worker.status, worker.processing, worker.busy_for))
        time.sleep(BEAT / 2)
    assert seen and set(seen) == {("active", 0, 0.0)}


def test_a_worker_with_a_free_thread_is_not_stalled(broker, queue_name, blocking, start_worker):
    blocking.send()
    start_worker(threads=2)
    busy = wait_for(lambda: (w := only_worker(broker)) is not None and w.processing == 1 and w)
    time.sleep(STALL + 2 * BEAT)
    worker = only_worker(broker, stall_timeout=STALL)
    assert (busy.status, worker.status, worker.processing, worker.busy_for) == ("active", "active", 1, 0)


def test_the_health_view_is_degraded_with_the_stalled_worker_and_its_queues(
    client, broker, queue_name, blocking, gate, start_worker, health
):
    health(DETAILS="public", STALL_TIMEOUT=STALL)
    blocking.send()
    start_worker(threads=1)

    body = wait_for(lambda: (b := client.get("/health/").json())["status"] == "degraded" and b)
    assert body["stalled_workers"] == 1 and body["active_workers"] == 0
    assert re.fullmatch(
        r"1 worker\(s\) stalled: every thread has held a message with none finished for up to \d+ s "
        r"\(stall timeout 0.5 s\)",
        body["reason"],
    )
    (queue,) = [q for q in body["queues"] if q["name"] == queue_name]
    # Stalled once busy for more than STALL; the reported time is rounded to the millisecond.
    assert queue["stalled_workers"] == 1 and queue["stalled_for"] >= STALL
    (worker,) = body["workers"]
    assert worker["status"] == "stalled" and worker["busy_for"] > STALL

    gate.set()
    body = wait_for(lambda: (b := client.get("/health/").json())["status"] == "healthy" and b)
    assert body["stalled_workers"] == 0 and "reason" not in body
    (queue,) = [q for q in body["queues"] if q["name"] == queue_name]
    assert (queue["stalled_workers"], queue["stalled_for"]) == (0, None)


def test_the_monitoring_page_shows_the_stalled_worker_and_why(
    client, django_user_model, broker, queue_name, blocking, gate, start_worker, health
):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    health(STALL_TIMEOUT=STALL)
    blocking.send()
    start_worker(threads=1)

    html = wait_for(
        lambda: 'class="dramatiq-worker stalled"' in (h := client.get(URL).content.decode()) and h
    )
    (row,) = table(html, "workers")
    assert row[2] == queue_name and row[3] == "1"
    assert re.fullmatch(r"stalled for \d+ s", row[5])
    assert re.search(r'id="status" class="dramatiq-status degraded">degraded<', html)
    assert re.search(r'<p class="errornote" id="status-reason">1 worker\(s\) stalled: ', html)

    gate.set()
    html = wait_for(lambda: 'class="dramatiq-worker active"' in (h := client.get(URL).content.decode()) and h)
    assert "status-reason" not in html


def test_the_workers_gauge_counts_stalled_workers(
    broker, queue_name, blocking, gate, start_worker, metric_reader
):
    def workers():
        return {
            p.attributes["status"]: p.value
            for p in points(metric_reader, "dramatiq.worker.count")
            if p.attributes["queue_name"] == queue_name
        }

    blocking.send()
    start_worker(threads=1)
    assert wait_for(lambda: workers().get("stalled") == 1 and workers()) == {
        "active": 0,
        "stale": 0,
        "stalled": 1,
    }
    gate.set()
    assert wait_for(lambda: workers().get("active") == 1 and workers()) == {
        "active": 1,
        "stale": 0,
        "stalled": 0,
    }


def test_the_oldest_waiting_message_age_is_reported_per_queue(broker, queue_name, metric_reader):
    empty = f"{queue_name}-empty"
    broker.declare_queue(empty)

    @dramatiq.actor(queue_name=queue_name)
    def waiting():
        pass

    past = int(time.time() * 1000) - 120_000
    broker.enqueue(waiting.message().copy(message_timestamp=past))  # sent two minutes ago
    waiting.send()  # a newer one behind it
    ages = {
        p.attributes["queue_name"]: p.value
        for p in points(metric_reader, "dramatiq.queue.oldest_message.age")
    }
    assert 120 <= ages[queue_name] < 180
    assert ages[empty] == 0

    # a delayed message come due a minute ago (moved back with its eta): counted from its eta
    broker.flush(queue_name)
    broker.enqueue(waiting.message().copy(message_timestamp=past, options={"eta": past + 60_000}))
    (stats,) = reader_for_broker(broker).read([queue_name]).queues
    assert 60 <= stats.oldest_age < 120
