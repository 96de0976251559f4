"""Faults: an OTLP endpoint that is down or hangs, and a Redis that stops under the health view."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .conftest import process_all


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1/traces"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


@pytest.mark.parametrize("endpoint_state", ["down", "hanging"])
def test_an_unreachable_otlp_endpoint_never_reaches_the_tasks(
    instrument, queue_name, endpoint_state, request
):
    endpoint = (
        f"http://127.0.0.1:{closed_port()}/v1/traces"
        if endpoint_state == "down"
        else request.getfixturevalue("hanging_endpoint")
    )
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, timeout=1),
        max_queue_size=64,
        max_export_batch_size=32,
        schedule_delay_millis=50,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    instrument(tracer_provider=provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)
    done = []

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def work(i):
        done.append(i)

    for i in range(300):
        work.send(i)
    process_all(broker, queue_name)

    assert sorted(done) == list(range(300))  # every task ran, none saw an exception
    # The SDK's queue (its attribute moved between releases) holds at most max_queue_size spans.
    queue = getattr(processor, "queue", None) or processor._batch_processor._queue
    assert len(queue) <= 64
    provider.shutdown()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[tuple[int, Callable[[], None]]]:
    """A redis-server of this test's own on a free port; ``restart()`` starts it again."""
    binary = shutil.which("redis-server")
    if binary is None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("redis-server is not installed")
    port = closed_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(tmp_path)]
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    start()
    yield port, start
    for process in processes:
        process.terminate()
        process.wait()


def test_the_health_view_follows_redis_going_away_and_coming_back(client, settings, private_redis):
    from dramatiq.brokers.redis import RedisBroker

    port, restart = private_redis
    settings.DRAMATIQ_HEALTH = {"TIMEOUT": 0.5, "MIN_WORKERS": 0}
    broker = RedisBroker(host="127.0.0.1", port=port, namespace="faults")
    broker.declare_queue("faults")
    dramatiq.set_broker(broker)

    assert client.get("/health/").json()["status"] == "healthy"
    with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it stops
        redis.Redis(port=port).shutdown(nosave=True)
    down = client.get("/health/")
    assert down.status_code == 500 and down.json()["status"] == "unhealthy"
    assert f"127.0.0.1:{port}" in down.json()["error"]
    restart()
    back = client.get("/health/")
    assert (back.status_code, back.json()["status"]) == (200, "healthy")
