"""Faults: an OTLP endpoint that is down or hangs; a Redis or RabbitMQ that hangs, stops and comes back
under the health view (servers of the tests' own, never the shared ones)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .conftest import process_all
from .servers import PrivateServer, closed_port


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
    queue = processor.queue if hasattr(processor, "queue") else processor._batch_processor._queue
    assert len(queue) <= 64
    provider.shutdown()


def _redis_broker(port: int) -> dramatiq.Broker:
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(host="127.0.0.1", port=port, namespace="faults")


def _rabbitmq_broker(port: int) -> dramatiq.Broker:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(host="127.0.0.1", port=port)


@pytest.mark.parametrize(
    ("server_fixture", "make_broker"),
    [("private_redis", _redis_broker), ("private_rabbitmq", _rabbitmq_broker)],
    ids=["redis", "rabbitmq"],
)
def test_the_health_view_follows_the_broker_hanging_going_away_and_coming_back(
    client, settings, request, server_fixture, make_broker
):
    server: PrivateServer = request.getfixturevalue(server_fixture)
    settings.DRAMATIQ_HEALTH = {"TIMEOUT": 0.5, "MIN_WORKERS": 0}
    broker = make_broker(server.port)
    broker.declare_queue("faults")
    dramatiq.set_broker(broker)

    def health() -> tuple[int, str, str]:
        """(HTTP status, health status, error) of one call of the view."""
        response = client.get("/health/")
        body = response.json()
        return response.status_code, body["status"], body.get("error", "")

    address = f"127.0.0.1:{server.port}"
    assert health() == (200, "healthy", "")

    server.pause()  # accepts connections and never answers: the read gives up after TIMEOUT
    try:
        code, status, error = health()
    finally:
        server.resume()
    assert (code, status) == (500, "unhealthy") and address in error
    assert health() == (200, "healthy", "")  # resumed: healthy again, nothing to reset

    server.stop()
    code, status, error = health()
    assert (code, status) == (500, "unhealthy") and address in error

    server.start()  # the same data directory: the same server coming back
    assert health() == (200, "healthy", "")
    broker.close()
