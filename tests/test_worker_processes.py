"""The real ``dramatiq`` command under ``opentelemetry-instrument``, exporting OTLP to a receiver the
test starts itself, against the real Redis broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import IO

import pytest
import redis

from .conftest import REDIS, require_service, unique
from .otlp_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MESSAGES = 20
PRODUCER = "import sys, tests.worker_app as app\nfor i in range(int(sys.argv[1])):\n    app.double.send(i)\n"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    receiver = Receiver(request.param)
    yield receiver
    receiver.stop()


@pytest.fixture
def log() -> Iterator[IO[str]]:
    """The workers' output: a file, not a pipe, since nobody reads it while they run."""
    with tempfile.TemporaryFile("w+") as file:
        yield file


def otel_env(receiver: Receiver, namespace: str, service: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WORKER_APP_NAMESPACE": namespace,
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        # Only the flush at worker shutdown can deliver the workers' spans: none may be lost there.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }


@contextlib.contextmanager
def running_workers(
    arguments: list[str], receiver: Receiver, namespace: str, log: IO[str], *, own_process_group: bool = False
) -> Iterator[Popen[str]]:
    """``opentelemetry-instrument dramatiq tests.worker_app ARGUMENTS``, killed if still running after the
    block, with the test's Redis namespace deleted. ``own_process_group``: the command leads a process
    group of its own (as a systemd unit's processes share a control group), for ``os.killpg``."""
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), "tests.worker_app", *arguments]
    env = otel_env(receiver, namespace, "worker")
    workers = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        start_new_session=own_process_group,
    )
    try:
        yield workers
    finally:
        if workers.poll() is None:
            if own_process_group:
                os.killpg(workers.pid, signal.SIGKILL)
            else:
                workers.kill()
            workers.wait()
        client = redis.Redis(*REDIS)
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)


def produce(receiver: Receiver, namespace: str, *arguments: str) -> None:
    """Run ``python -c ...`` under opentelemetry-instrument as the producer process."""
    subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", *arguments],
        env=otel_env(receiver, namespace, "producer"),
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def drained(client: redis.Redis, namespace: str) -> bool:
    return client.llen(f"{namespace}:{namespace}") == 0 and client.hlen(f"{namespace}:{namespace}.msgs") == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("process_model", "receiver"),
    [("fork", "grpc"), ("fork", "http/protobuf"), ("spawn", "grpc")],
    indirect=["receiver"],
)
def test_every_message_is_traced_from_producer_process_to_worker_processes(receiver, process_model, log):
    require_service("Redis", REDIS)
    namespace = unique("otel-procs")
    client = redis.Redis(*REDIS)
    # What a user types: opentelemetry-instrument dramatiq tests.worker_app --processes 2 --threads 2
    arguments = ["--processes", "2", "--threads", "2"] + (["--use-spawn"] if process_model == "spawn" else [])
    with running_workers(arguments, receiver, namespace, log) as workers:
        produce(receiver, namespace, PRODUCER, str(MESSAGES))
        deadline = time.monotonic() + 120
        while not drained(client, namespace):
            assert workers.poll() is None, "the workers exited early"
            assert time.monotonic() < deadline, "the workers did not drain the queue"
            time.sleep(0.1)
        # Both worker processes have booted (registered themselves): a SIGTERM during a spawned
        # child's boot can hang Dramatiq's own CLI, which is not what this test is about.
        while client.hlen(f"{namespace}:__otel_workers__") < 2:
            assert workers.poll() is None and time.monotonic() < deadline, "the workers did not boot"
            time.sleep(0.1)
        # Every message is processed; the workers still hold their spans (schedule delay 10 min).
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=120)

    log.seek(0)
    assert workers.returncode == 0, log.read()
    receiver.wait_for(lambda r: len(r.named("process ")) >= MESSAGES, timeout=30)
    sends = {span.span_id: span for span in receiver.named(f"send {namespace}")}
    processes = receiver.named(f"process {namespace}")
    assert len(sends) == MESSAGES
    assert len(processes) == MESSAGES
    for process in processes:
        send = sends[process.parent_span_id]
        assert process.trace_id == send.trace_id
        assert process.kind == 5 and send.kind == 4  # CONSUMER, PRODUCER (OTLP enum values)
        assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
        assert process.resource["service.name"] == "worker" and send.resource["service.name"] == "producer"
    assert len({p.parent_span_id for p in processes}) == MESSAGES


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
def test_a_task_running_at_sigterm_ends_its_span_and_exports_it(receiver, log):
    require_service("Redis", REDIS)
    namespace = unique("otel-sigterm")
    client = redis.Redis(*REDIS)
    arguments = ["--processes", "1", "--threads", "1", "--queues", f"{namespace}-slow"]
    with running_workers(arguments, receiver, namespace, log) as workers:
        produce(receiver, namespace, "import tests.worker_app as a; a.slow.send()")
        deadline = time.monotonic() + 120
        while not client.get(f"{namespace}:slow-started"):
            assert workers.poll() is None and time.monotonic() < deadline, "the task did not start"
            time.sleep(0.1)
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=120)

    receiver.wait_for(lambda r: len(r.named("process ")) >= 1, timeout=30)
    (process,) = receiver.named(f"process {namespace}-slow")
    assert process.status_code == 2  # ERROR
    assert process.attributes["error.type"] == "dramatiq.middleware.shutdown.Shutdown"


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
def test_sigterm_to_the_process_group_still_exports_the_finished_spans(receiver, log):
    """systemd's default ``KillMode=control-group`` SIGTERMs every process of the unit: each worker
    process gets two SIGTERMs (systemd's and its main process's) and Dramatiq exits on the second at
    once, before the shutdown flush. The spans its threads had finished must still be exported."""
    require_service("Redis", REDIS)
    namespace = unique("otel-killpg")
    client = redis.Redis(*REDIS)
    arguments = ["--processes", "2", "--threads", "2"]
    with running_workers(arguments, receiver, namespace, log, own_process_group=True) as workers:
        produce(receiver, namespace, PRODUCER, str(MESSAGES))
        deadline = time.monotonic() + 120
        while not drained(client, namespace) or client.hlen(f"{namespace}:__otel_workers__") < 2:
            assert workers.poll() is None and time.monotonic() < deadline, (
                "the workers did not drain the queue"
            )
            time.sleep(0.1)
        # Every message is processed and its span waits in the batch processor (schedule delay 10 min).
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(timeout=120)

    log.seek(0)
    # Dramatiq's behaviour is unchanged: the second SIGTERM still kills the worker processes.
    assert workers.returncode == 1, log.read()  # dramatiq.cli.RET_KILLED
    receiver.wait_for(lambda r: len(r.named("process ")) >= MESSAGES, timeout=30)
    processes = receiver.named(f"process {namespace}")
    assert len(processes) == MESSAGES
    assert len({span.attributes["messaging.message.id"] for span in processes}) == MESSAGES
