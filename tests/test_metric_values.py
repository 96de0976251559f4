"""Metric values, not just their presence: durations in seconds, waits from the eta, the in-flight
count while a task runs, and the queue gauges against what the broker holds (Stub, Redis, RabbitMQ).

Bounds are loose on purpose (these are unit and reference-point checks, not speed checks): a
milliseconds-for-seconds slip, a wait measured from the send instead of the eta, or an in-flight
count that never rises all fail them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.common import dq_name
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker

from .conftest import wait_processed
from .test_metrics import points

#: Seconds the measured actor sleeps; the duration means must lie in [SLEEP, SANE).
SLEEP = 0.2
SANE = 5.0


@pytest.fixture
def instrumented(instrument: Callable[..., DramatiqInstrumentor]) -> DramatiqInstrumentor:
    """Queue gauges read the broker at every collection (no throttle) in this module."""
    return instrument(queue_metrics_interval=0)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"condition not met in {timeout} s")


def gauge(reader: InMemoryMetricReader, name: str, queue_name: str) -> float | None:
    values = [p.value for p in points(reader, name) if p.attributes.get("queue_name") == queue_name]
    return values[0] if values else None


def test_durations_are_the_actors_run_time_in_seconds(broker, start_worker, queue_name, metric_reader):
    @dramatiq.actor(queue_name=queue_name)
    def sleepy():
        time.sleep(SLEEP)

    sleepy.send()
    sleepy.send()
    wait_processed(broker, queue_name, start_worker())

    for name in ("dramatiq.task.duration", "messaging.process.duration"):
        (histogram,) = points(metric_reader, name)
        assert histogram.count == 2, name
        assert SLEEP <= histogram.sum / histogram.count < SANE, (name, histogram.sum)
        assert histogram.min >= SLEEP and histogram.max < SANE, name


def test_a_delayed_messages_wait_is_measured_from_its_eta(broker, start_worker, queue_name, metric_reader):
    delay = 1.5

    ran_at: list[float] = []

    @dramatiq.actor(queue_name=queue_name)
    def later():
        ran_at.append(time.time() * 1000)

    start_worker()
    sent = later.send_with_options(delay=int(delay * 1000))
    wait_until(lambda: points(metric_reader, "dramatiq.queue.wait.duration"))

    (wait,) = points(metric_reader, "dramatiq.queue.wait.duration")
    assert wait.count == 1
    # Recorded just before the actor ran: at most the time from the eta to then (plus rounding to the
    # millisecond), never the 1.5 s more it would be if measured from the send.
    eta = sent.options["eta"]
    assert eta <= ran_at[0]
    assert 0 <= wait.sum <= (ran_at[0] - eta) / 1000 + 0.002, (wait.sum, ran_at[0] - eta)


def test_in_flight_is_one_while_the_actor_runs_and_zero_after(
    broker, start_worker, queue_name, metric_reader
):
    running, release = threading.Event(), threading.Event()

    @dramatiq.actor(queue_name=queue_name)
    def blocked():
        running.set()
        release.wait(30)

    def in_flight() -> float:
        return sum(p.value for p in points(metric_reader, "dramatiq.worker.message.active"))

    worker = start_worker()
    blocked.send()
    assert running.wait(30)
    assert in_flight() == 1
    release.set()
    wait_processed(broker, queue_name, worker)
    assert in_flight() == 0


def test_queue_gauges_count_what_waits_and_what_died(broker, start_worker, queue_name, metric_reader):
    """A message delayed by 60 s while a worker runs, and one that failed for good.

    The worker takes the delayed message off the delay queue at once and holds it unacknowledged:
    Redis and the StubBroker count it; a RabbitMQ reader without the management API counts ready
    messages only and reads 0 (see docs/queue-counts.md; the management-API test reads 1)."""

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def doomed():
        raise ValueError("for good")

    @dramatiq.actor(queue_name=queue_name)
    def patient():
        return None

    worker = start_worker()
    patient.send_with_options(delay=60_000)
    doomed.send()
    wait_until(lambda: gauge(metric_reader, "dramatiq.queue.dead_lettered", queue_name) == 1)
    wait_until(lambda: ready_in(broker, dq_name(queue_name)) == 0)  # the worker holds it now
    snapshot = reader_for_broker(broker).read([queue_name])

    assert gauge(metric_reader, "dramatiq.queue.dead_lettered", queue_name) == 1
    assert gauge(metric_reader, "dramatiq.queue.depth", queue_name) == 0
    expected_delayed = 0 if snapshot.counts == "ready" else 1
    assert gauge(metric_reader, "dramatiq.queue.delayed", queue_name) == expected_delayed
    assert snapshot.counts == ("ready" if type(broker).__name__ == "RabbitmqBroker" else "ready+unacked")
    worker.stop()


def ready_in(broker: dramatiq.Broker, queue: str) -> int:
    """Messages of ``queue`` not yet delivered to any consumer, read from the broker itself."""
    kind = type(broker).__name__
    if kind == "StubBroker":
        return int(broker.queues[queue].qsize())  # type: ignore[attr-defined]
    if kind == "RedisBroker":
        return int(broker.client.llen(f"{broker.namespace}:{queue}"))  # type: ignore[attr-defined]
    frame = broker.channel.queue_declare(queue, passive=True)  # type: ignore[attr-defined]
    return int(frame.method.message_count)
