"""The worker registry beside any broker (issue 27, part 3): a Redis given by URL, the Django
database, none; what the health view and the page say of each; the beat's extension point; ids
unique by construction; the gauge's stale timeout as the health view's."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker, registry_store
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import (
    WorkerRegistryMiddleware,
    new_worker_id,
)

from .test_metrics import points
from .test_monitoring_page import URL

STALL = 2.0
BEAT = 1.0

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)
    return value


@pytest.fixture
def gate() -> Any:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def stuck_actor(queue_name: str, gate: threading.Event) -> Any:
    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def stuck() -> None:
        gate.wait(120)

    return stuck


@pytest.fixture
def registry_url(private_redis: Any) -> str:
    return f"redis://127.0.0.1:{private_redis.port}/0"


@pytest.fixture
def instrumented(request: pytest.FixtureRequest, instrument: Any) -> Any:
    """The middleware with this file's stall timeout and beat, and the options a test passes as
    ``instrumented`` (indirect); ``registry_redis_url=True`` stands for the private Redis."""
    options: dict[str, Any] = dict(getattr(request, "param", {}))
    if options.get("registry_redis_url") is True:
        options["registry_redis_url"] = request.getfixturevalue("registry_url")
    return instrument(stall_timeout=STALL, registry_interval=BEAT, queue_metrics_interval=0, **options)


@pytest.fixture
def staff_client(client: Any, django_user_model: Any) -> Any:
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("instrumented", [{"registry_redis_url": True}], indirect=True)
@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_on_rabbitmq_a_redis_url_keeps_the_registry_and_tells_stalled_workers(
    registry_url, broker, queue_name, stuck_actor, gate, start_worker, client, health, metric_reader
):
    health(DETAILS="public", STALL_TIMEOUT=STALL, REGISTRY_REDIS_URL=registry_url)
    stuck_actor.send()
    worker = start_worker(threads=1)

    body = wait_for(lambda: (b := client.get("/health/").json())["stalled_workers"] == 1 and b)
    assert (body["status"], body["registry_store"], body["active_workers"]) == ("degraded", "redis-url", 0)
    (record,) = body["workers"]
    assert record["status"] == "stalled" and record["queues"] == [queue_name] and record["busy_for"] > STALL
    # Written to that Redis, under the default prefix (RabbitMQ has no namespace).
    stored = redis.Redis(port=int(registry_url.rsplit(":", 1)[1].split("/")[0])).hgetall(
        "dramatiq:__otel_workers__"
    )
    assert [key.decode() for key in stored] == [record["worker_id"]]
    assert {
        p.attributes["status"]: p.value
        for p in points(metric_reader, "dramatiq.worker.count")
        if p.attributes["queue_name"] == queue_name
    } == {"active": 0, "stale": 0, "stalled": 1}

    gate.set()
    body = wait_for(lambda: (b := client.get("/health/").json())["status"] == "healthy" and b)
    assert body["active_workers"] == 1 and body["workers"][0]["finished"] == 1
    worker.stop()  # a clean stop deletes its entry
    assert wait_for(lambda: client.get("/health/").json()["total_workers"] == 0 or None) is True


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_on_rabbitmq_the_django_database_keeps_the_registry_with_one_upsert_per_beat(
    broker, queue_name, stuck_actor, gate, start_worker, health, staff_client
):
    from opentelemetry_instrumentation_dramatiq_cfg.django.models import WorkerRecord

    client = staff_client
    health(DETAILS="public", STALL_TIMEOUT=STALL, REGISTRY_DATABASE=True)
    stuck_actor.send()
    worker = start_worker(threads=1)

    body = wait_for(lambda: (b := client.get("/health/").json())["stalled_workers"] == 1 and b)
    assert (body["status"], body["registry_store"], body["total_workers"]) == ("degraded", "django-db", 1)
    row = WorkerRecord.objects.get()
    assert row.worker_id == body["workers"][0]["worker_id"] and row.record["queues"] == [queue_name]
    html = staff_client.get(URL).content.decode()
    assert (
        "Worker registry: this site&#x27;s database." in html
        or "Worker registry: this site's database." in html
    )
    assert 'class="dramatiq-worker stalled"' in html

    gate.set()
    wait_for(lambda: client.get("/health/").json()["status"] == "healthy")
    worker.stop()
    assert not WorkerRecord.objects.exists()  # deleted on a clean stop


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_on_rabbitmq_with_no_store_the_consumer_counts_remain_and_the_page_says_how(
    broker, queue_name, start_worker, health, staff_client
):
    @dramatiq.actor(queue_name=queue_name)
    def work() -> None:
        pass

    client = staff_client

    health(DETAILS="public")
    start_worker()
    body = wait_for(lambda: (b := client.get("/health/").json())["active_workers"] == 1 and b)
    assert body["registry_store"] is None and "stalled_workers" not in body
    html = staff_client.get(URL).content.decode()
    assert "This broker has no worker registry, so stalled workers cannot be told" in html
    assert "OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL" in html and "REGISTRY_DATABASE" in html


@pytest.mark.parametrize("broker_kind", ["redis", "stub"], indirect=True)
def test_the_store_is_stated_in_the_health_answer(broker, broker_kind, client, health):
    health(DETAILS="public", MIN_WORKERS=0)
    assert (
        client.get("/health/").json()["registry_store"] == {"redis": "redis", "stub": "memory"}[broker_kind]
    )


@pytest.mark.expect_swallowed_errors
@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_beat_contributors_join_the_beats_single_round_trip(
    broker, namespace, start_worker, record_redis_writes
):
    def contribute(beat: registry_store.Beat) -> None:
        beat.pipeline.hset(f"{beat.store.prefix}:stats", beat.worker_id, "7")

    def broken(beat: registry_store.Beat) -> None:
        raise RuntimeError("a contributor's bug")

    registry_store.add_beat_contributor(broken)
    registry_store.add_beat_contributor(contribute)
    try:
        writes = record_redis_writes()
        worker = start_worker()
        stats = wait_for(lambda: broker.client.hgetall(f"{namespace}:stats") or None)
        worker.stop()
    finally:
        registry_store.remove_beat_contributor(contribute)
        registry_store.remove_beat_contributor(broken)
    ((worker_id, value),) = stats.items()
    assert value == b"7" and worker_id.decode().count(":") == 2
    beats = [
        w for w in writes if b"__otel_workers__" in b"".join(_parts(w)) and b"HSET" in b"".join(_parts(w))
    ]
    assert beats and all(b"stats" in b"".join(_parts(w)) for w in beats)  # same write: one round trip


def _parts(packed: Any) -> list[bytes]:
    return [bytes(p) for p in packed] if isinstance(packed, list | tuple) else [bytes(packed)]


@pytest.mark.expect_swallowed_errors
def test_beat_contributors_run_in_the_database_stores_transaction(health):
    from django.db import connection

    from opentelemetry_instrumentation_dramatiq_cfg.django.models import WorkerRecord
    from opentelemetry_instrumentation_dramatiq_cfg.django.registry_store import DjangoStore

    seen: list[Any] = []

    def contribute(beat: registry_store.Beat) -> None:
        seen.append(
            (beat.connection.in_atomic_block, WorkerRecord.objects.filter(worker_id=beat.worker_id).exists())
        )
        raise RuntimeError("a contributor's bug does not undo the beat")

    def bad_sql(beat: registry_store.Beat) -> None:
        with beat.connection.cursor() as cursor:  # aborts a PostgreSQL transaction but for its savepoint
            cursor.execute("SELECT * FROM no_such_table_of_a_contributor")

    store = DjangoStore()
    registry_store.add_beat_contributor(bad_sql)
    registry_store.add_beat_contributor(contribute)
    try:
        store.beat("h:1:ab", {"last_seen": 5.0}, 5.0)
        store.beat("h:1:ab", {"last_seen": 6.0}, 6.0)
    finally:
        registry_store.remove_beat_contributor(contribute)
        registry_store.remove_beat_contributor(bad_sql)
    assert seen == [(True, True), (True, True)] and not connection.in_atomic_block
    assert store.read() == {"h:1:ab": {"last_seen": 6.0}}
    store.prune(7.0)
    assert store.read() == {}


@pytest.mark.expect_swallowed_errors
def test_a_registry_store_outage_never_stops_a_worker(queue_name, closed_redis_url, swallowed_errors):
    broker = StubBroker(middleware=[WorkerRegistryMiddleware(interval=0.05, redis_url=closed_redis_url)])
    broker.emit_after("process_boot")
    done = []

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def work() -> None:
        done.append(1)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        work.send()
        broker.join(queue_name)
        time.sleep(0.2)  # a few failing beats
    finally:
        worker.stop()
    assert done == [1]
    assert swallowed_errors.records
    assert all(r.getMessage().startswith("Worker registry: could not") for r in swallowed_errors.records)
    snapshot = reader_for_broker(broker, registry_redis_url=closed_redis_url, timeout=0.5).read()
    assert (snapshot.store, snapshot.registry, snapshot.workers) == ("redis-url", False, ())
    assert snapshot.meta["registry_error"].startswith("worker registry (redis-url) could not be read: ")


@pytest.fixture
def closed_redis_url() -> str:
    from .servers import closed_port

    return f"redis://127.0.0.1:{closed_port()}/0"


def test_worker_ids_are_unique_by_construction_and_readable():
    ids = {new_worker_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    host, pid, token = next(iter(ids)).split(":")
    assert (host, int(pid), len(token)) == (socket.gethostname(), os.getpid(), 16)


def test_two_workers_of_one_process_have_distinct_entries_and_one_each_with_two_middlewares(queue_name):
    broker = StubBroker(
        middleware=[WorkerRegistryMiddleware(interval=0.05), WorkerRegistryMiddleware(interval=0.05)]
    )
    broker.emit_after("process_boot")
    broker.declare_queue(queue_name)
    workers = [dramatiq.Worker(broker, worker_threads=1, worker_timeout=50) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        seen = wait_for(lambda: len(w := reader_for_broker(broker).read().workers) == 2 and w)
    finally:
        for worker in workers:
            worker.stop()
    assert len({w.worker_id for w in seen}) == 2
    assert reader_for_broker(broker).read().workers == ()


def test_the_worker_gauge_calls_a_worker_stale_after_the_health_views_timeout(
    instrument, metric_reader, queue_name, health, client
):
    from django.apps import apps

    instrument(queue_metrics_interval=0)
    broker = StubBroker()
    broker.declare_queue(queue_name)
    dramatiq.set_broker(broker)
    quiet = time.time() - 40
    registry_store.memory_registry.setdefault(broker, {})["cut-off:1:ab"] = {
        "host": "cut-off",
        "pid": 1,
        "queues": [queue_name],
        "threads": 1,
        "last_seen": quiet,
    }
    health(DETAILS="public", WORKER_TIMEOUT=15)
    published = dict(registry_store.published)
    try:
        apps.get_app_config("dramatiq_otel").ready()  # as at start-up, with this block
        gauge = {
            p.attributes["status"]: p.value
            for p in points(metric_reader, "dramatiq.worker.count")
            if p.attributes["queue_name"] == queue_name
        }
    finally:
        registry_store.published.clear()
        registry_store.published.update(published)
    assert client.get("/health/").json()["workers"][0]["status"] == "stale"
    assert gauge == {"active": 0, "stale": 1, "stalled": 0}


def test_the_worker_timeout_variable_sets_the_gauge_and_the_health_view_alike(
    instrument, metric_reader, queue_name, health, client, monkeypatch
):
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT", "15")
    monkeypatch.setattr(registry_store, "published", {})
    from opentelemetry_instrumentation_dramatiq_cfg.queue_state import base

    monkeypatch.setattr(base, "published", {})
    instrument(queue_metrics_interval=0)
    broker = StubBroker()
    broker.declare_queue(queue_name)
    dramatiq.set_broker(broker)
    registry_store.memory_registry.setdefault(broker, {})["cut-off:1:ab"] = {
        "host": "cut-off",
        "pid": 1,
        "queues": [queue_name],
        "threads": 1,
        "last_seen": time.time() - 40,
    }
    health(DETAILS="public")
    assert client.get("/health/").json()["workers"][0]["status"] == "stale"
    assert {
        p.attributes["status"]: p.value
        for p in points(metric_reader, "dramatiq.worker.count")
        if p.attributes["queue_name"] == queue_name
    } == {"active": 0, "stale": 1, "stalled": 0}
