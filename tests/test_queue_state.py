"""Queue state read straight from the real brokers, the worker registry, and the queue gauges."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import dramatiq
import pytest

import opentelemetry_instrumentation_dramatiq_cfg.queue_state as queue_state
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import (
    BrokerUnavailable,
    WorkerRegistryMiddleware,
    reader_for_broker,
)

from .conftest import cleanup_broker, make_broker, require_service, unique, wait_processed
from .test_metrics import points


def read(broker, *names):
    return {q.name: q for q in reader_for_broker(broker).read(names or None).queues}


def test_queue_state_never_imports_opentelemetry():
    package = Path(queue_state.__file__).parent
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module or "")
    assert not [name for name in imported if name.startswith("opentelemetry")]


def test_a_queue_that_does_not_exist_reads_as_zeros(broker):
    name = unique("never-declared")
    (stats,) = reader_for_broker(broker).read([name]).queues
    assert (stats.name, stats.pending, stats.delayed, stats.dead_lettered) == (name, 0, 0, 0)


def test_pending_delayed_and_dead_lettered_counts(broker, queue_name, start_worker):
    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def work(fail):
        if fail:
            raise RuntimeError("dead letter me")

    for _ in range(3):
        work.send(False)
    work.send_with_options(args=(False,), delay=3_600_000)
    stats = read(broker)[queue_name]
    assert (stats.pending, stats.delayed, stats.dead_lettered) == (3, 1, 0)

    broker.flush_all()  # then fail one message for good
    work.send(True)
    worker = start_worker()
    wait_for(lambda: read(broker)[queue_name].dead_lettered == 1)
    worker.stop()
    stats = read(broker)[queue_name]
    assert (stats.pending, stats.dead_lettered) == (0, 1)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_a_process_that_only_sends_is_not_a_worker(broker, queue_name):
    @dramatiq.actor(queue_name=queue_name)
    def sent_only():
        pass

    sent_only.send()
    snapshot = reader_for_broker(broker).read()
    assert snapshot.active_workers == 0
    assert snapshot.workers == ()


def test_a_running_worker_is_registered_and_removed_when_it_stops(broker, queue_name, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def noop():
        pass

    worker = start_worker(threads=3)
    reader = reader_for_broker(broker)
    wait_for(lambda: reader.read().active_workers >= 1)
    snapshot = reader.read()
    if snapshot.registry:
        (entry,) = snapshot.workers
        assert entry.status == "active" and entry.threads == 3 and queue_name in entry.queues
    else:  # RabbitMQ: consumers of the queue
        assert snapshot.queues[0].consumers >= 1
    worker.stop()
    if snapshot.registry:
        assert reader.read().workers == ()


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_worker_not_seen_within_the_timeout_is_stale(broker, namespace, start_worker):
    start_worker()
    reader = reader_for_broker(broker, worker_timeout=0.001)
    wait_for(lambda: len(reader.read().workers) == 1)
    time.sleep(0.01)
    (entry,) = reader.read().workers
    assert entry.status == "stale"
    assert reader.read().active_workers == 0


def test_the_registry_middleware_alone_registers_workers(namespace):
    require_service("Redis", ("127.0.0.1", 6379))
    broker = make_broker("redis", namespace)
    broker.add_middleware(WorkerRegistryMiddleware())
    broker.declare_queue("alone")
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        assert reader_for_broker(broker).read().active_workers == 1
    finally:
        worker.stop()
        cleanup_broker(broker, namespace)


@pytest.mark.parametrize("broker_kind", ["stub", "redis"])
def test_a_worker_started_on_some_queues_is_registered_with_those_only(broker, namespace, start_worker):
    for suffix in ("a", "b", "c"):
        broker.declare_queue(f"{namespace}-{suffix}")
    start_worker(queues={f"{namespace}-a", f"{namespace}-c"})
    (entry,) = reader_for_broker(broker).read().workers
    assert entry.queues == (f"{namespace}-a", f"{namespace}-c")


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_reading_redis_writes_nothing(broker, queue_name, record_redis_writes, monkeypatch):
    @dramatiq.actor(queue_name=queue_name)
    def noop():
        pass

    noop.send()
    client = broker.client
    before = {key: client.dump(key) for key in client.scan_iter(match=f"{broker.namespace}*")}
    reader = reader_for_broker(broker)
    writes = record_redis_writes()
    for _ in range(3):
        reader.read([queue_name, unique("other")])
    monkeypatch.undo()
    after = {key: client.dump(key) for key in client.scan_iter(match=f"{broker.namespace}*")}
    assert after == before
    # Every command the reader sent (RESP arrays: "*N\r\n$len\r\nNAME...") is a read.
    names = {
        part.split(b"\r\n")[2].upper()
        for write in writes
        for chunk in (write if isinstance(write, list) else [write])
        for part in bytes(chunk).split(b"*")[1:]
        if part.count(b"\r\n") >= 2 and part.split(b"\r\n")[1].startswith(b"$")
    }
    assert names and names <= {
        b"LLEN",
        b"HLEN",
        b"ZCARD",
        b"HGETALL",
        b"EVAL_RO",  # the head message's due time: the server refuses a read-only script any write
        b"PING",
        b"CLIENT",
        b"HELLO",
        b"SELECT",
    }


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_redis_read_of_all_queues_is_one_round_trip(broker, record_redis_writes):
    for i in range(20):
        broker.declare_queue(f"{broker.namespace}-{i}")
    reader = reader_for_broker(broker)
    reader.read()  # connect
    writes = record_redis_writes()
    snapshot = reader.read()
    assert len(snapshot.queues) == 20
    assert len(writes) == 1


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_reading_rabbitmq_declares_no_queue(broker):
    import pika

    name = unique("not-there")
    reader_for_broker(broker).read([name])
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().queue_declare(name, passive=True)
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("redis", "redis://admin:s3cret-pw@127.0.0.1:1/0"),
        ("rabbitmq", "amqp://admin:s3cret-pw@127.0.0.1:1/%2F"),
    ],
)
def test_an_unreachable_broker_fails_with_a_clean_error(kind, url):
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    reader = reader_for_broker(broker, timeout=0.5)
    with pytest.raises(BrokerUnavailable) as raised:
        reader.read(["q"])
    assert "s3cret" not in str(raised.value) and "s3cret" not in repr(reader)
    assert "127.0.0.1:1" in str(raised.value)
    assert reader.ping() is False


def test_an_unknown_broker_type_is_refused_by_name():
    class HomeMadeBroker(dramatiq.Broker):  # type: ignore[misc]
        pass

    with pytest.raises(TypeError, match="HomeMadeBroker"):
        reader_for_broker(HomeMadeBroker(middleware=[]))


def test_queue_gauges_report_the_pending_messages(broker, queue_name, metric_reader):
    @dramatiq.actor(queue_name=queue_name)
    def waiting():
        pass

    for _ in range(5):
        waiting.send()

    depth = {p.attributes["queue_name"]: p.value for p in points(metric_reader, "dramatiq.queue.depth")}
    delayed = {p.attributes["queue_name"]: p.value for p in points(metric_reader, "dramatiq.queue.delayed")}
    assert depth[queue_name] == 5
    assert delayed[queue_name] == 0


def test_workers_gauge_counts_the_workers_of_each_queue(
    broker, broker_kind, queue_name, metric_reader, start_worker
):
    idle_queue = f"{queue_name}-idle"

    @dramatiq.actor(queue_name=queue_name)
    def consumed():
        pass

    @dramatiq.actor(queue_name=idle_queue)
    def not_consumed():
        pass

    start_worker(queues={queue_name})
    wait_for(lambda: read(broker)[queue_name].consumers or reader_for_broker(broker).read().active_workers)

    workers = {
        (p.attributes["queue_name"], p.attributes["status"]): p.value
        for p in points(metric_reader, "dramatiq.worker.count")
    }
    expected = {(queue_name, "active"): 1, (idle_queue, "active"): 0}
    if broker_kind != "rabbitmq":  # the registry also tells workers that stopped beating
        for queue in (queue_name, idle_queue):
            expected.update({(queue, "stale"): 0, (queue, "stalled"): 0})
    assert workers == expected


def test_queue_gauges_report_nothing_for_an_unreadable_broker(instrument, metric_reader):
    from dramatiq.brokers.redis import RedisBroker

    instrument()
    broker = RedisBroker(url="redis://127.0.0.1:1/0")
    broker.declare_queue("unreachable")
    assert points(metric_reader, "dramatiq.queue.depth") == []
    assert points(metric_reader, "dramatiq.worker.count") == []


def test_worker_registry_is_written_by_the_instrumented_worker_only(broker, queue_name, start_worker):
    @dramatiq.actor(queue_name=queue_name)
    def noop():
        pass

    noop.send()
    worker = start_worker()
    wait_processed(broker, queue_name, worker)
    snapshot = reader_for_broker(broker).read()
    assert snapshot.active_workers >= 1


def test_the_registry_middleware_alone_records_progress():
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker(middleware=[WorkerRegistryMiddleware(interval=0.05)])

    @dramatiq.actor(broker=broker, queue_name="progress")
    def noop():
        pass

    for _ in range(5):
        noop.send()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        broker.join("progress")
        wait_for(lambda: [w.finished for w in reader_for_broker(broker).read().workers] == [5])
        (entry,) = reader_for_broker(broker).read().workers
        assert (entry.status, entry.processing, entry.busy_for) == ("active", 0, 0)
    finally:
        worker.stop()
