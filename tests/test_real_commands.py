"""The real ``dramatiq`` command beyond Redis and the slow set: forked workers on RabbitMQ (not marked
slow, so the wheel and oldest-releases runs of .ci/run include a real command), and a real
redelivery after a crash for "one alert per permanent failure"."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pika
import pytest
import redis
from dramatiq.common import dq_name, xq_name

from . import test_worker_processes
from .conftest import RABBITMQ, REDIS, require_service, unique
from .otlp_receiver import Receiver
from .test_worker_processes import BIN, ROOT, otel_env, produce

# The fixtures of the Redis worker-process tests: an OTLP receiver (indirect parameter) and a log file.
receiver = test_worker_processes.receiver
log = test_worker_processes.log

MESSAGES = 5
PRODUCER = (
    "import sys, tests.worker_app_rabbitmq as app\n"
    "for i in range(int(sys.argv[1])):\n    app.double.send(i)\n"
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_until(
    predicate: Callable[[], bool], workers: subprocess.Popen[str], what: str, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert workers.poll() is None, f"the workers exited before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def start_workers(app: str, arguments: list[str], env: dict[str, str], log: IO[str]) -> subprocess.Popen[str]:
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), app, *arguments]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)


def stop(workers: subprocess.Popen[str]) -> None:
    if workers.poll() is None:
        workers.kill()
        workers.wait()


@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
def test_rabbitmq_workers_forked_by_the_command_trace_every_message(receiver: Receiver, log, tmp_path):
    """``opentelemetry-instrument dramatiq app --processes 1 --threads 2`` (fork) on RabbitMQ."""
    require_service("RabbitMQ", RABBITMQ)
    namespace = unique("otel-rmq-procs")
    done = tmp_path / "done"
    env = {**otel_env(receiver, namespace, "worker"), "WORKER_APP_DONE": str(done)}
    workers = start_workers("tests.worker_app_rabbitmq", ["--processes", "1", "--threads", "2"], env, log)
    try:
        produce(
            receiver,
            namespace,
            PRODUCER,
            str(MESSAGES),
        )
        wait_until(lambda: len(lines(done)) == MESSAGES, workers, "every message processed")
        workers.send_signal(signal.SIGTERM)  # the workers still hold their spans (schedule delay 10 min)
        workers.wait(timeout=120)
    finally:
        stop(workers)
        _delete_queues(namespace)

    log.seek(0)
    assert workers.returncode == 0, log.read()
    assert sorted(int(line.split()[1]) for line in lines(done)) == [2 * i for i in range(MESSAGES)]
    assert len({line.split()[0] for line in lines(done)}) == 1  # one forked worker process
    receiver.wait_for(lambda r: len(r.named(f"process {namespace}")) >= MESSAGES, timeout=30)
    sends = {span.span_id: span for span in receiver.named(f"send {namespace}")}
    processes = receiver.named(f"process {namespace}")
    assert len(sends) == len(processes) == MESSAGES
    for process in processes:
        send = sends[process.parent_span_id]
        assert process.trace_id == send.trace_id
        assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
        assert process.resource["service.name"] == "worker" and send.resource["service.name"] == "producer"


def _delete_queues(namespace: str) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(*RABBITMQ))
    try:
        channel = connection.channel()
        for name in (namespace, dq_name(namespace), xq_name(namespace)):
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
def test_a_failure_redelivered_after_a_crash_alerts_once(receiver: Receiver, log, tmp_path):
    """A worker process runs the failure hook of a message that failed for good, then dies (SIGKILL)
    before acknowledging it. Dramatiq redelivers the message to the next worker, where it fails for
    good again: the hook must not run a second time (the Redis claim on the message id)."""
    require_service("Redis", REDIS)
    namespace = unique("otel-redeliver")
    attempts, alerts = tmp_path / "attempts", tmp_path / "alerts"
    env = {
        **otel_env(receiver, namespace, "worker"),
        "WORKER_APP_ATTEMPTS": str(attempts),
        "WORKER_APP_ALERTS": str(alerts),
        "WORKER_APP_HEARTBEAT_TIMEOUT": "2000",
        "OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS": "tests.worker_app.alert_then_crash_once",
    }
    arguments = ["--processes", "1", "--threads", "1", "--queues", f"{namespace}-fatal"]
    client = redis.Redis(*REDIS)
    try:
        first = start_workers("tests.worker_app", arguments, env, log)
        try:
            produce(receiver, namespace, "import tests.worker_app as a; a.fatal.send()")
            first.wait(timeout=120)  # its worker process was killed: Dramatiq's main process stops
        finally:
            stop(first)
        assert (len(lines(attempts)), len(lines(alerts))) == (1, 1)

        second = start_workers("tests.worker_app", arguments, env, log)
        try:
            wait_until(lambda: len(lines(attempts)) == 2, second, "the redelivered attempt")
            wait_until(
                lambda: client.zcard(f"{namespace}:{namespace}-fatal.XQ") == 1, second, "the dead letter"
            )
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=120)
        finally:
            stop(second)
    finally:
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)

    (first_attempt, second_attempt) = lines(attempts)
    assert first_attempt != second_attempt  # two worker processes
    (alert,) = lines(alerts)
    assert alert.split()[0] == first_attempt
