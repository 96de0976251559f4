"""Quiet broker with the real ``dramatiq`` command under ``opentelemetry-instrument``, which auto-loads
the Redis and pika instrumentations installed beside this package, on Redis and RabbitMQ, fork and
spawn: idle workers export no span, and each message is one trace (its send and process spans, and
the Redis calls under them).

The idle window is 6 s rather than the issue's 20 s: it holds every kind of traffic several times.
Each consumer thread (the queue's and its delay queue's) polls at least once a second (Dramatiq's
worker timeout, 1 s, bounds the Redis consumer's back-off), the worker registry writes at boot and
beats every 5 s, and the queue gauges read the broker every second (console metric exporter,
``OTEL_METRIC_EXPORT_INTERVAL=1000``, gauge interval 0).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import IO

import pytest
import redis

from .conftest import RABBITMQ, REDIS, require_service, unique
from .otlp_receiver import ReceivedSpan, Receiver
from .test_worker_processes import otel_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MESSAGES = 10
IDLE_SECONDS = 6
PRODUCER = "import sys, tests.quiet_app as app\nfor i in range(int(sys.argv[1])):\n    app.touch.send(i)\n"


def app_env(receiver: Receiver, namespace: str, service: str, broker: str, **extra: str) -> dict[str, str]:
    return {
        **otel_env(receiver, namespace, service),
        "QUIET_APP_BROKER": broker,
        "OTEL_METRICS_EXPORTER": "console",  # the queue gauges read the broker at every collection
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL": "0",
        **extra,
    }


def cleanup(broker: str, namespace: str) -> None:
    client = redis.Redis(*REDIS)
    for key in client.scan_iter(match=f"{namespace}*"):
        client.delete(key)
    if broker == "rabbitmq":
        import pika

        connection = pika.BlockingConnection(pika.ConnectionParameters(*RABBITMQ))
        try:
            channel = connection.channel()
            for name in (namespace, f"{namespace}.DQ", f"{namespace}.XQ"):
                channel.queue_delete(name)
        finally:
            connection.close()


@contextlib.contextmanager
def workers_running(
    arguments: list[str], env: dict[str, str], broker: str, namespace: str, log: IO[str]
) -> Iterator[Popen[str]]:
    """``opentelemetry-instrument dramatiq tests.quiet_app ARGUMENTS``, killed if still running after
    the block; the test's Redis keys and RabbitMQ queues deleted."""
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), "tests.quiet_app", *arguments]
    workers = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        yield workers
    finally:
        if workers.poll() is None:
            workers.kill()
            workers.wait()
        cleanup(broker, namespace)


def wait_until_ready(workers: Popen[str], log: IO[str], processes: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        log.seek(0)
        if log.read().count("Worker process is ready for action.") >= processes:
            return
        assert workers.poll() is None, "the workers exited early"
        assert time.monotonic() < deadline, "the workers did not boot"
        time.sleep(0.1)


def run(broker: str, process_model: str, **extra: str) -> tuple[str, list[ReceivedSpan], list[ReceivedSpan]]:
    """Boot one worker process, leave it idle IDLE_SECONDS, send MESSAGES from a producer process,
    wait until every actor ran, stop the workers: (queue name, worker spans, producer spans)."""
    receiver = Receiver("grpc")
    try:
        with tempfile.TemporaryFile("w+") as log:  # the workers' output, read only on failure
            return _run(receiver, broker, process_model, log, **extra)
    finally:
        receiver.stop()


def _run(
    receiver: Receiver, broker: str, process_model: str, log: IO[str], **extra: str
) -> tuple[str, list[ReceivedSpan], list[ReceivedSpan]]:
    require_service("Redis", REDIS)
    if broker == "rabbitmq":
        require_service("RabbitMQ", RABBITMQ)
    namespace = unique("otel-quiet")
    client = redis.Redis(*REDIS)
    arguments = ["--processes", "1", "--threads", "2"] + (["--use-spawn"] if process_model == "spawn" else [])
    env = app_env(receiver, namespace, "worker", broker, **extra)
    with workers_running(arguments, env, broker, namespace, log) as workers:
        wait_until_ready(workers, log, 1)
        time.sleep(IDLE_SECONDS)
        subprocess.run(
            [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", PRODUCER, str(MESSAGES)],
            env=app_env(receiver, namespace, "producer", broker, **extra),
            cwd=ROOT,
            check=True,
            timeout=120,
        )
        deadline = time.monotonic() + 120
        while len(list(client.scan_iter(match=f"{namespace}:touched:*"))) < MESSAGES:
            assert workers.poll() is None and time.monotonic() < deadline, "the actors did not all run"
            time.sleep(0.1)
        workers.send_signal(signal.SIGTERM)  # the worker flushes its spans at shutdown
        workers.wait(timeout=120)
    log.seek(0)
    assert workers.returncode == 0, log.read()
    receiver.wait_for(lambda r: len(r.named(f"process {namespace}")) >= MESSAGES, timeout=30)
    time.sleep(0.5)  # any straggler of the same export
    by_service: dict[str, list[ReceivedSpan]] = {"worker": [], "producer": []}
    for span in receiver.spans:
        by_service[span.resource["service.name"]].append(span)
    return namespace, by_service["worker"], by_service["producer"]


def children(spans: list[ReceivedSpan], parents: list[ReceivedSpan]) -> Counter[str]:
    ids = {parent.span_id for parent in parents}
    return Counter(span.name for span in spans if span.parent_span_id in ids)


@pytest.mark.slow
@pytest.mark.parametrize("process_model", ["fork", "spawn"])
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_idle_workers_export_nothing_and_each_message_is_one_trace(broker, process_model):
    queue, worker, producer = run(broker, process_model)

    sends = [s for s in producer if s.name == f"send {queue}"]
    processes = [s for s in worker if s.name == f"process {queue}"]
    assert (len(sends), len(processes)) == (MESSAGES, MESSAGES)
    assert {s.parent_span_id for s in processes} == {s.span_id for s in sends}  # one process per send
    # No root span but the sends, on either side: nothing from the idle window, the fetches, acks,
    # heartbeats, registry or gauges, nor pika's PRODUCER/CONSUMER spans.
    assert [s.name for s in worker + producer if not s.parent_span_id] == [s.name for s in sends]
    # Under each process span, the actor's own SET; nothing else on the worker.
    assert Counter(s.name for s in worker) == Counter({f"process {queue}": MESSAGES, "SET": MESSAGES})
    assert children(worker, processes) == Counter({"SET": MESSAGES})
    # Under each send span, its broker round trip on Redis (EVALSHA; the first enqueue also runs
    # Dramatiq's one-off maxstack script there), nothing on RabbitMQ.
    under_sends = children(producer, sends)
    assert len(producer) == MESSAGES + sum(under_sends.values())
    if broker == "redis":
        assert set(under_sends) == {"EVALSHA"} and MESSAGES <= under_sends["EVALSHA"] <= MESSAGES + 1
    else:
        assert under_sends == Counter()


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_with_the_option_off_the_broker_spans_come_back(broker):
    queue, worker, producer = run(broker, "fork", OTEL_PYTHON_DRAMATIQ_SUPPRESS_BROKER_SPANS="false")

    foreign_worker_roots = Counter(s.name for s in worker if not s.parent_span_id)
    if broker == "redis":  # fetches and acks, registry writes, gauge reads: each a trace of its own
        assert foreign_worker_roots["EVALSHA"] >= 2 * IDLE_SECONDS
        assert foreign_worker_roots["HSET"] >= 1
        # The gauges' one pipeline (its span is named by its commands; EVAL_RO reads the oldest message).
        gauge_reads = sum(n for name, n in foreign_worker_roots.items() if name.startswith("LLEN HLEN"))
        assert gauge_reads >= IDLE_SECONDS // 2
    else:  # pika's own PRODUCER spans, now children of our send spans
        sends = [s for s in producer if s.name == f"send {queue}"]
        assert children(producer, sends)[f"{queue} send"] == MESSAGES
