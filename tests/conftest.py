"""Shared fixtures: telemetry captured in memory, and real brokers (Stub, Redis, RabbitMQ).

Every test gets its own Redis namespace and its own queue names and cleans up after itself. When
``CI=true`` an unreachable Redis or RabbitMQ fails the test instead of skipping it, and any other skip
fails too unless its reason is on ``tests/skip-allowlist.txt``. A test also fails when one of the
instrumentation's guards swallowed an exception (logged with its traceback) during it, unless it is
marked ``expect_swallowed_errors``.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, processes

from .servers import private_rabbitmq, private_redis, private_server_factory  # noqa: F401 (fixtures)

REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
BROKER_KINDS = ("stub", "redis", "rabbitmq")


def require_service(name: str, address: tuple[str, int]) -> None:
    """Skip (or, under CI=true, fail) when a service the test needs is not listening."""
    try:
        with socket.create_connection(address, timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {address[0]}:{address[1]}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


SKIP_ALLOWLIST = Path(__file__).with_name("skip-allowlist.txt")


def allowed_skip_reasons() -> list[str]:
    """The reasons a skip may give under ``CI=true``: the non-comment lines of the allow-list file."""
    lines = SKIP_ALLOWLIST.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_unlisted_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under ``CI=true`` a skip whose reason is not allow-listed becomes a failure: a green run then
    means every test ran (a missing service, interpreter or feature cannot pass silently)."""
    if not report.skipped or os.environ.get("CI") != "true" or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if any(allowed in reason for allowed in allowed_skip_reasons()):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true and the reason is not on {SKIP_ALLOWLIST.name}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())  # type: ignore[attr-defined]


class SwallowedErrors(logging.Handler):
    """Collects every exception a guard of the instrumentation swallowed: the package logs each one
    with its traceback (``exc_info``), and Dramatiq logs "Unexpected failure in <hook>" for one that
    escaped a hook of our middleware (other middleware's failures are Dramatiq's business)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.startswith(PACKAGE_LOGGER) and record.exc_info is not None
        # Dramatiq's emit_before/emit_after: ("Unexpected failure in %s of %r.", signal, middleware)
        escaped = (
            record.name.startswith("dramatiq")
            and str(record.msg).startswith("Unexpected failure in")
            and isinstance(record.args, tuple)
            and type(record.args[-1]).__module__.startswith(PACKAGE_LOGGER)
        )
        if ours or escaped:
            self.records.append(record)

    def describe(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}\n{self.format(r)}" for r in self.records)


PACKAGE_LOGGER = "opentelemetry_instrumentation_dramatiq_cfg"


@pytest.fixture(autouse=True)
def swallowed_errors(request: pytest.FixtureRequest) -> Iterator[SwallowedErrors]:
    """Fails the test when a guarded hook swallowed an exception during it (a broken code path must not
    hide behind a negative assertion). A test that provokes one on purpose is marked
    ``@pytest.mark.expect_swallowed_errors`` and may assert on ``swallowed_errors.records``."""
    handler = SwallowedErrors()
    handler.setFormatter(logging.Formatter())
    package, dramatiq_logger = logging.getLogger(PACKAGE_LOGGER), logging.getLogger("dramatiq")
    level = package.level
    package.setLevel(logging.DEBUG)
    package.addHandler(handler)
    dramatiq_logger.addHandler(handler)
    try:
        yield handler
    finally:
        package.removeHandler(handler)
        dramatiq_logger.removeHandler(handler)
        package.setLevel(level)
    expected = request.node.get_closest_marker("expect_swallowed_errors") is not None
    if handler.records and not expected:
        pytest.fail(
            "a guard swallowed an exception (mark the test expect_swallowed_errors if it is meant to):\n"
            + handler.describe()
        )
    if expected and not handler.records:
        pytest.fail("marked expect_swallowed_errors, but no guard swallowed an exception")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(metric_reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[metric_reader])


@pytest.fixture
def instrument(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> Iterator[Callable[..., DramatiqInstrumentor]]:
    """``instrument(**options)``: instrument with in-memory providers; undone after the test."""
    instrumentor = DramatiqInstrumentor()

    def _instrument(**options: Any) -> DramatiqInstrumentor:
        options.setdefault("tracer_provider", tracer_provider)
        options.setdefault("meter_provider", meter_provider)
        instrumentor.instrument(**options)
        return instrumentor

    yield _instrument
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def instrumented(instrument: Callable[..., DramatiqInstrumentor]) -> DramatiqInstrumentor:
    return instrument()


@pytest.fixture(autouse=True)
def _restore_global_broker() -> Iterator[None]:
    previous = dramatiq.broker.global_broker
    yield
    dramatiq.broker.global_broker = previous


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts outside a ``dramatiq`` worker process (the broker fixture then emits
    ``process_boot`` as the command would), with no warning given yet."""
    monkeypatch.setattr(processes, "_state", {"worker_process": False, "warned": False})


def make_broker(kind: str, namespace: str) -> dramatiq.Broker:
    """A fresh broker of ``kind`` (its middleware as Dramatiq's defaults), isolated by ``namespace``."""
    if kind == "stub":
        return StubBroker()
    if kind == "redis":
        require_service("Redis", REDIS)
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(host=REDIS[0], port=REDIS[1], namespace=namespace, heartbeat_timeout=60_000)
    if kind == "rabbitmq":
        require_service("RabbitMQ", RABBITMQ)
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(host=RABBITMQ[0], port=RABBITMQ[1], heartbeat=0, confirm_delivery=True)
    raise ValueError(kind)


def cleanup_broker(broker: dramatiq.Broker, namespace: str) -> None:
    queues = list(broker.get_declared_queues())
    try:
        broker.flush_all()
    finally:
        kind = type(broker).__name__
        if kind == "RedisBroker":
            client = broker.client  # type: ignore[attr-defined]
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
        elif kind == "RabbitmqBroker":
            from dramatiq.common import dq_name, xq_name

            channel = broker.channel  # type: ignore[attr-defined]
            for queue in queues:
                for name in (queue, dq_name(queue), xq_name(queue)):
                    channel.queue_delete(name)
        broker.close()


@pytest.fixture
def namespace() -> str:
    """Redis namespace and queue-name prefix private to this test."""
    return unique("otel-test")


@pytest.fixture
def queue_name(namespace: str) -> str:
    return f"{namespace}-q"


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def broker(broker_kind: str, namespace: str, instrumented: DramatiqInstrumentor) -> Iterator[dramatiq.Broker]:
    """An instrumented broker of each kind, set as the global broker."""
    broker = make_broker(broker_kind, namespace)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    cleanup_broker(broker, namespace)


@pytest.fixture
def start_worker(broker: dramatiq.Broker) -> Iterator[Callable[..., dramatiq.Worker]]:
    """``start_worker(threads=1)``: a real Worker on the broker, stopped after the test."""
    workers: list[dramatiq.Worker] = []

    def _start(threads: int = 1, **kwargs: Any) -> dramatiq.Worker:
        worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50, **kwargs)
        worker.start()
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.stop()


def wait_processed(broker: dramatiq.Broker, queue_name: str, worker: dramatiq.Worker | None = None) -> None:
    """Block until every message of ``queue_name`` (delayed ones and retries too) is done."""
    if isinstance(broker, StubBroker):
        broker.join(queue_name, timeout=60_000, fail_fast=False)
    else:
        broker.join(queue_name, timeout=60_000)  # type: ignore[call-arg]
    if worker is not None:
        worker.join()


@pytest.fixture
def record_redis_writes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[Any]]:
    """``record_redis_writes()``: from then on, every write of a redis-py connection to its socket
    (one per round trip: a pipeline is written once) is appended to the returned list."""

    def start() -> list[Any]:
        import redis.connection

        writes: list[Any] = []
        # The base class of every redis-py connection: AbstractConnection since redis 5, Connection before.
        base = getattr(redis.connection, "AbstractConnection", redis.connection.Connection)
        original = base.send_packed_command

        def recording(self: Any, command: Any, check_health: bool = True) -> None:
            writes.append(command)
            original(self, command, check_health)

        monkeypatch.setattr(base, "send_packed_command", recording)
        return writes

    return start


@pytest.fixture
def health(settings: Any) -> Callable[..., None]:
    """Set DRAMATIQ_HEALTH for one test (Django tests): ``health(DETAILS="public", ...)``."""

    def configure(**block: Any) -> None:
        settings.DRAMATIQ_HEALTH = block

    configure()
    return configure


def process_all(broker: dramatiq.Broker, *queue_names: str) -> None:
    """Run a one-thread Worker until every message of ``queue_names`` is done, then stop it."""
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        for queue_name in queue_names:
            wait_processed(broker, queue_name, worker)
    finally:
        worker.stop()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def server_attributes(broker_kind: str) -> dict[str, Any]:
    """``server.address``/``server.port`` the telemetry of a ``broker_kind`` broker carries."""
    address = {"redis": REDIS, "rabbitmq": RABBITMQ}.get(broker_kind)
    return {"server.address": address[0], "server.port": address[1]} if address else {}


def send_to_unreachable_redis() -> BaseException:
    """Send a message (queue ``unreachable``) through a Redis broker nobody listens on, set as the
    global broker; the exception the caller got."""
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url="redis://127.0.0.1:1/0"))

    @dramatiq.actor(queue_name="unreachable")
    def lost() -> None:
        pass

    with pytest.raises(Exception) as raised:
        lost.send()
    return raised.value
