"""Stalls judged on what the record proves, with the registry's real beats (issue 27, part 1).

A record is up to one beat old when it is read: judging ``now - busy_since`` called a worker that
keeps finishing messages stalled. These tests set the beat with the documented option (never by
patching) and read the registry every 50 ms, so they see records of every age between two beats.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from django.core.exceptions import ImproperlyConfigured

from opentelemetry_instrumentation_dramatiq_cfg.config import Options
from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker

from .test_metrics import points

ROOT = Path(__file__).resolve().parent.parent
#: Stall timeout and beat of these tests (seconds): the shortest pair the options allow.
STALL = 2.0
BEAT = 1.0
#: A task "just under the timeout".
TASK = 1.6

pytestmark = pytest.mark.django_db


@pytest.fixture
def instrumented(instrument):
    return instrument(stall_timeout=STALL, registry_interval=BEAT, queue_metrics_interval=0)


@pytest.fixture
def gate(start_worker):
    event = threading.Event()
    yield event
    event.set()  # before the workers stop


def watch(broker: Any, until: Any, timeout: float = 120.0, **options: Any) -> list[Any]:
    """Every worker the reader sees, every 50 ms, until ``until(workers)`` (bounded)."""
    reader = reader_for_broker(broker, stall_timeout=STALL, **options)
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        workers = reader.read().workers
        seen.extend(workers)
        if until(workers):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached; last seen {workers}")
        time.sleep(0.05)


def test_the_registry_beats_at_the_option_and_refuses_a_stall_timeout_under_two_beats(broker, broker_kind):
    (middleware,) = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
    assert middleware._registry.interval == BEAT
    with pytest.raises(ValueError, match=r"stall_timeout \(4 s\) must be at least two registry beats"):
        Options.resolve(stall_timeout=4, registry_interval=5)
    # Without the option the beat is 5 s, or half the stall timeout when that is shorter.
    assert OpenTelemetryMiddleware(stall_timeout=4)._registry.interval == 2.0
    assert OpenTelemetryMiddleware()._registry.interval == 5.0


def test_the_beat_and_its_check_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL", "3")
    assert OpenTelemetryMiddleware(stall_timeout=6)._registry.interval == 3.0
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_STALL_TIMEOUT", "4")
    with pytest.raises(ValueError, match="two registry beats"):
        Options.resolve()


def test_the_health_settings_refuse_a_stall_timeout_under_two_beats(health, client):
    from django.core.checks import run_checks

    health(STALL_TIMEOUT=4, REGISTRY_INTERVAL=5)
    assert [m.msg for m in run_checks() if m.id == "dramatiq_otel.E001"] == [
        "DRAMATIQ_HEALTH['STALL_TIMEOUT'] (4 s) must be at least two registry beats "
        "(2 x REGISTRY_INTERVAL = 10 s): a worker's record is up to one beat old"
    ]
    from opentelemetry_instrumentation_dramatiq_cfg.django.conf import health_settings

    with pytest.raises(ImproperlyConfigured, match="two registry beats"):
        health_settings()


@pytest.mark.parametrize("broker_kind", ["stub", "redis"], indirect=True)
def test_a_worker_that_keeps_finishing_tasks_just_under_the_timeout_is_never_stalled(
    broker, queue_name, start_worker
):
    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def slow() -> None:
        time.sleep(TASK)

    for _ in range(8):  # 4 rounds of 2 threads: 6.4 s busy, over 3 stall timeouts
        slow.send()
    start_worker(threads=2)

    seen = watch(broker, lambda workers: len(workers) == 1 and workers[0].finished == 8)

    assert {worker.status for worker in seen} == {"active"}
    busy = [worker.busy_for for worker in seen if worker.processing == 2]
    assert busy and max(busy) < STALL  # all threads were busy, none for the stall timeout


@pytest.mark.parametrize("broker_kind", ["stub", "redis"], indirect=True)
def test_a_stuck_worker_is_stalled_at_the_first_beat_past_the_timeout(broker, queue_name, gate, start_worker):
    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def stuck() -> None:
        gate.wait(120)

    stuck.send()
    start_worker(threads=1)

    seen = watch(broker, lambda workers: any(worker.status == "stalled" for worker in workers))

    beats = {worker.last_seen: worker for worker in seen if worker.processing == 1}
    ordered = [beats[at] for at in sorted(beats)]
    first = next(index for index, worker in enumerate(ordered) if worker.status == "stalled")
    assert ordered[first].busy_for > STALL
    # The beat before proved no stall: the verdict came at the first beat that could give it.
    assert first > 0 and ordered[first - 1].status == "active" and ordered[first - 1].busy_for <= STALL


@pytest.mark.parametrize("broker_kind", ["redis"], indirect=True)
def test_a_half_stuck_pool_shows_exactly_one_stalled_worker(
    broker, namespace, gate, start_worker, metric_reader
):
    stuck_queue, busy_queue = f"{namespace}-stuck", f"{namespace}-busy"

    @dramatiq.actor(queue_name=stuck_queue, max_retries=0)
    def stuck() -> None:
        gate.wait(120)

    @dramatiq.actor(queue_name=busy_queue, max_retries=0)
    def slow() -> None:
        time.sleep(TASK)

    stuck.send()
    for _ in range(5):  # 8 s of work on one thread: four stall timeouts
        slow.send()
    start_worker(threads=1, queues={stuck_queue})
    start_worker(threads=1, queues={busy_queue})

    def done(workers: list[Any]) -> bool:
        return any(worker.queues == (busy_queue,) and worker.finished == 5 for worker in workers)

    seen = watch(broker, done)

    assert {w.status for w in seen if w.queues == (busy_queue,)} == {"active"}
    snapshot = reader_for_broker(broker, stall_timeout=STALL).read()
    assert [w.queues for w in snapshot.stalled_workers] == [(stuck_queue,)]
    assert snapshot.active_workers == 1
    stalled = {
        p.attributes["queue_name"]: p.value
        for p in points(metric_reader, "dramatiq.worker.count")
        if p.attributes["status"] == "stalled"
    }
    assert (stalled[stuck_queue], stalled[busy_queue]) == (1, 0)


@pytest.mark.slow
def test_the_real_command_busy_with_a_stream_of_tasks_is_never_called_stalled(client, health, tmp_path):
    """The issue's report: ``dramatiq`` with 2 processes x 2 threads, a 4 s stall timeout, every
    thread kept busy by tasks just under it (3.5 s) with a 2 s beat, so a record read up to a beat
    after it was written (as ``now - busy_since`` judged) would claim 5.5 s; the health view is
    polled all along."""
    from dramatiq.brokers.redis import RedisBroker

    from .conftest import REDIS, cleanup_broker, require_service, unique

    require_service("Redis", REDIS)
    namespace = unique("otel-stall-cmd")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STALL_APP_NAMESPACE": namespace,
        "OTEL_PYTHON_DRAMATIQ_STALL_TIMEOUT": "4",
        "OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL": "2",
        "STALL_APP_TASK_SECONDS": "3.5",
        "OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_ENABLED": "false",
    }
    broker = RedisBroker(host=REDIS[0], port=REDIS[1], namespace=namespace)
    broker.declare_queue(namespace)
    dramatiq.set_broker(broker)
    health(DETAILS="public", STALL_TIMEOUT=4)
    tasks = 16  # 4 rounds of 4 threads: 14 s, over three stall timeouts
    for _ in range(tasks):
        broker.enqueue(
            dramatiq.Message(queue_name=namespace, actor_name="task", args=(), kwargs={}, options={})
        )
    log = (tmp_path / "workers.log").open("w+")
    workers = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dramatiq"),
            "tests.stall_app",
            "--processes",
            "2",
            "--threads",
            "2",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    bodies = []
    try:
        deadline = time.monotonic() + 180
        while True:
            body = client.get("/health/").json()
            bodies.append(body)
            if sum(w["finished"] for w in body["workers"]) == tasks:
                break
            assert workers.poll() is None, "the workers exited"
            assert time.monotonic() < deadline, f"the tasks did not finish: {body}"
            time.sleep(0.25)
        workers.send_signal(signal.SIGTERM)
        workers.wait(120)
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait(30)
        cleanup_broker(broker, namespace)
    log.seek(0)
    assert workers.returncode == 0, log.read()
    assert {b["status"] for b in bodies} <= {"healthy", "degraded"}
    assert [b for b in bodies if b["stalled_workers"]] == []
    assert [b for b in bodies if any(w["status"] == "stalled" for w in b["workers"])] == []
    # Every thread was busy in the records the view read (the situation of the report).
    assert any(
        len(b["workers"]) == 2 and all(w["processing"] == 2 and w["busy_for"] > 0 for w in b["workers"])
        for b in bodies
    )
