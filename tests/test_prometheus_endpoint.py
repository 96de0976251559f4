"""``dramatiq_prometheus``: one endpoint for the metrics of several processes, in this test process and
processes it forks (the real ``dramatiq`` command is in tests/test_prometheus_processes.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from opentelemetry_instrumentation_dramatiq_cfg import processes
from opentelemetry_instrumentation_dramatiq_cfg.metrics import instruments_for
from opentelemetry_instrumentation_dramatiq_cfg.prometheus import DramatiqPrometheusMetricReader
from opentelemetry_instrumentation_dramatiq_cfg.prometheus.reader import OFF, SERVE, SERVER_ENV, WRITE

from .conftest import PACKAGE_LOGGER, process_all
from .otel_prometheus import SCOPE_LABELS, otel_exporter
from .prometheus_server import free_port

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(port: int, accept: str | None = None) -> tuple[str, str]:
    """``(content type, body)`` of ``GET /metrics``."""
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(body: str) -> list[Any]:
    """The samples of a scrape, in either format."""
    parse = openmetrics_families if body.rstrip().endswith("# EOF") else text_string_to_metric_families
    return [sample for family in parse(body) for sample in family.samples]


Sample = tuple[str, frozenset[tuple[str, str]], float]


def sample_set(body: str, scope_labels: bool = True) -> set[Sample]:
    """A scrape as a set of samples, whatever the order of its lines and labels (without the
    ``otel_scope_*`` labels unless ``scope_labels``)."""
    return {
        (
            s.name,
            frozenset((k, v) for k, v in s.labels.items() if scope_labels or not k.startswith("otel_scope_")),
            s.value,
        )
        for s in samples(body)
    }


def mixed_label_sets(found: set[Sample]) -> set[str]:
    """The metrics some of whose points lack an attribute others have (rendered as an empty label)."""
    return {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name, labels, _ in found
        if any(value == "" for _, value in labels)
    }


def values(body: str, name: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples(body)
        if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
    ]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``serve(**reader_options) -> (reader, provider)``: a serving reader on a free port."""
    monkeypatch.delenv(SERVER_ENV, raising=False)
    made: list[tuple[DramatiqPrometheusMetricReader, MeterProvider]] = []

    def _serve(**options: Any) -> tuple[DramatiqPrometheusMetricReader, MeterProvider]:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", free_port())
        options.setdefault("directory", tmp_path / "snapshots")
        reader = DramatiqPrometheusMetricReader(**options)
        provider = MeterProvider(metric_readers=[reader])
        made.append((reader, provider))
        return reader, provider

    yield _serve
    for _, provider in made:
        provider.shutdown()


def in_child(body: Callable[[], None], *, stay: bool = False) -> tuple[int, int]:
    """Fork a child that runs ``body`` (then writes its snapshot) and exits with ``os._exit``, as the
    ``dramatiq`` command's workers do; with ``stay`` it then waits until its pipe is closed.
    Returns ``(pid, write end of that pipe)`` once the child's snapshot is written."""
    ready_read, ready_write = os.pipe()
    hold_read, hold_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(ready_read)
            os.close(hold_write)
            body()
            os.write(ready_write, b"1")
            if stay:
                os.read(hold_read, 1)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(ready_write)
    os.close(hold_read)
    assert os.read(ready_read, 1) == b"1", "the child failed"
    os.close(ready_read)
    return pid, hold_write


def test_series_are_byte_for_byte_those_of_the_otel_prometheus_exporter(serve, instrument):
    """Golden test: the same measurements through the OTel exporter (its defaults) and this endpoint:
    the same set of samples (name, labels, value) on every exporter release, the same bytes from 0.64b0."""
    standard, render = otel_exporter(scope_info_enabled=True)
    reader = DramatiqPrometheusMetricReader(host="127.0.0.1", port=free_port(), export_interval=60)
    provider = MeterProvider(metric_readers=[standard, reader])
    try:
        instrument(meter_provider=provider)
        broker = StubBroker()
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="golden", max_retries=1, min_backoff=1, max_backoff=2)
        def compared(fail):
            if fail:
                raise ValueError("no")

        for fail in (False, True, False):
            compared.send(fail)
        process_all(broker, "golden")

        content_type, body = scrape(reader.port)
        if SCOPE_LABELS:
            assert body == render()
        ours, theirs = sample_set(body, scope_labels=SCOPE_LABELS), sample_set(render())
        if not SCOPE_LABELS:
            # Before 0.64b0 the exporter has no otel_scope_* labels (this endpoint always has them, as
            # the newer exporter does), and it writes the label values of a metric whose points have
            # different attribute sets (error.type on failed attempts only) under the wrong names: that
            # metric is compared by names and values only, the rest sample by sample
            # (messaging.client.consumed.messages carries no error.type since 0.2.0).
            mixed = mixed_label_sets(ours)
            assert mixed == {"messaging_process_duration_seconds"}

            def split(found: set[Sample]) -> tuple[set[Sample], list[tuple[str, float]]]:
                plain = {s for s in found if not s[0].startswith(tuple(mixed))}
                return plain, sorted((s[0], s[2]) for s in found - plain)

            ours, ours_mixed = split(ours)
            theirs, theirs_mixed = split(theirs)
            assert ours_mixed == theirs_mixed
        assert ours == theirs
        assert content_type.startswith("text/plain; version=0.0.4")
        assert values(body, "dramatiq_tasks_total", task_name="compared", status="success") == [2.0]
        assert values(body, "dramatiq_tasks_total", task_name="compared", status="retry") == [1.0]
        assert values(body, "dramatiq_tasks_total", task_name="compared", status="failure") == [1.0]
        assert values(body, "target_info")  # the resource, as the exporter renders it
        assert 'otel_scope_name="opentelemetry_instrumentation_dramatiq_cfg.metrics"' in body
    finally:
        provider.shutdown()


def test_without_scope_labels_the_guides_series_carry_only_the_guides_labels(serve, instrument):
    reader, provider = serve(scope_info=False, target_info=False)
    instrument(meter_provider=provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="plain")
    def plain():
        return None

    plain.send()
    process_all(broker, "plain")

    _, body = scrape(reader.port)
    (tasks,) = [s for s in samples(body) if s.name == "dramatiq_tasks_total"]
    assert tasks.labels == {"task_name": "plain", "status": "success"}
    (count,) = [s for s in samples(body) if s.name == "dramatiq_task_duration_seconds_count"]
    assert (count.labels, count.value) == ({"task_name": "plain"}, 1.0)
    assert not values(body, "target_info")


def test_openmetrics_scrape_carries_exemplars_of_the_process_spans(serve, instrument):
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader, provider = serve()
    instrument(meter_provider=provider, tracer_provider=tracer_provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="exemplary")
    def exemplary():
        return None

    for _ in range(3):
        exemplary.send()
    process_all(broker, "exemplary")

    content_type, body = scrape(reader.port, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    process_spans = {
        (format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"))
        for s in exporter.get_finished_spans()
        if s.name == "process exemplary"
    }
    for name in ("dramatiq_task_duration_seconds_bucket", "messaging_process_duration_seconds_bucket"):
        exemplars = {
            (s.exemplar.labels["trace_id"], s.exemplar.labels["span_id"])
            for s in samples(body)
            if s.name == name and s.exemplar is not None
        }
        assert exemplars, f"no exemplar on {name}"
        assert exemplars <= process_spans
    # The same endpoint, asked for the classic format, has no exemplars (that format has none).
    _, text = scrape(reader.port)
    assert " # {" not in text


def test_counters_and_histograms_are_summed_over_processes_gauges_are_not(serve):
    reader, provider = serve(export_interval=3600)  # children write only at their final flush
    instruments = instruments_for(provider)
    meter = provider.get_meter("test")
    meter.create_observable_gauge(
        "dramatiq.queue.depth",
        callbacks=[lambda options: [Observation(4, {"queue_name": "shared"})]],
    )

    def worker(successes: int) -> Callable[[], None]:
        def body() -> None:
            for _ in range(successes):
                instruments.tasks.add(1, {"task_name": "summed", "status": "success"})
                instruments.task_duration.record(0.02, {"task_name": "summed"})
            instruments.in_flight.add(1, {"queue_name": "shared"})
            provider.force_flush()  # what the middleware does at worker shutdown

        return body

    exited, _ = in_child(worker(3))
    os.waitpid(exited, 0)
    running, hold = in_child(worker(5), stay=True)
    try:
        _, body = scrape(reader.port)
        assert values(body, "dramatiq_tasks_total", task_name="summed", status="success") == [8.0]
        assert values(body, "dramatiq_task_duration_seconds_count", task_name="summed") == [8.0]
        assert values(body, "dramatiq_task_duration_seconds_bucket", task_name="summed", le="0.025") == [8.0]
        assert values(body, "dramatiq_queue_depth", queue_name="shared") == [4.0]  # not 4 times 3 processes
        assert values(body, "dramatiq_worker_message_active", queue_name="shared") == [1.0]  # live only
        # Every series once.
        keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples(body)]
        assert len(keys) == len(set(keys))
        # The exited child's file was folded into the server and removed; its counts stay.
        assert [p.name.split("-")[0] for p in reader.directory.glob("*.json")] == [str(running)]
        _, again = scrape(reader.port)
        assert values(again, "dramatiq_tasks_total", task_name="summed", status="success") == [8.0]
    finally:
        os.close(hold)
        os.waitpid(running, 0)
    _, after = scrape(reader.port)
    assert values(after, "dramatiq_tasks_total", task_name="summed", status="success") == [8.0]
    assert values(after, "dramatiq_worker_message_active", queue_name="shared") == []


def test_a_process_killed_with_sigkill_keeps_its_last_written_counts(serve):
    reader, provider = serve(export_interval=3600)
    instruments = instruments_for(provider)

    def body() -> None:
        instruments.tasks.add(7, {"task_name": "killed", "status": "success"})
        provider.force_flush()

    pid, hold = in_child(body, stay=True)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(hold)
    _, body_text = scrape(reader.port)
    assert values(body_text, "dramatiq_tasks_total", task_name="killed", status="success") == [7.0]


def test_a_writing_child_snapshots_periodically(serve):
    reader, provider = serve(export_interval=0.2)
    instruments = instruments_for(provider)

    def body() -> None:
        import time

        instruments.tasks.add(2, {"task_name": "periodic", "status": "success"})
        deadline = time.monotonic() + 30
        while not list(reader.directory.glob(f"{os.getpid()}-*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)  # no flush: only the periodic writer can write it

    pid, hold = in_child(body, stay=True)
    try:
        _, text = scrape(reader.port)
        assert values(text, "dramatiq_tasks_total", task_name="periodic", status="success") == [2.0]
    finally:
        os.close(hold)
        os.waitpid(pid, 0)


def test_roles_serving_process_announces_itself_and_children_write(serve):
    reader, _ = serve()
    assert reader.role == SERVE
    assert os.environ[SERVER_ENV] == f"{os.getpid()}:{reader.directory}"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, reader.role.encode())
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 16) == WRITE.encode()
    os.waitpid(pid, 0)


def test_port_already_taken_logs_one_clear_line_and_never_raises(serve, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING):
            reader, provider = serve(port=port)
        instruments_for(provider).tasks.add(1, {"task_name": "x", "status": "success"})
        provider.force_flush()  # nothing to serve it, nothing raised
    assert reader.role == OFF
    (record,) = [r for r in caplog.records if r.name.startswith("opentelemetry_instrumentation_dramatiq_cfg")]
    assert record.levelno == logging.ERROR
    assert (
        f"127.0.0.1:{port}" in record.getMessage() and "OTEL_EXPORTER_PROMETHEUS_PORT" in record.getMessage()
    )
    assert SERVER_ENV not in os.environ


def test_unwritable_snapshot_directory_is_logged_once_and_tasks_run(serve, tmp_path, caplog):
    reader, provider = serve(export_interval=3600)
    instruments = instruments_for(provider)
    reader.directory.chmod(0o500)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            logging.getLogger().handlers[:] = [logging.StreamHandler(os.fdopen(write_end, "w", buffering=1))]
            logging.getLogger(PACKAGE_LOGGER).setLevel(logging.NOTSET)  # as users log: the root's WARNING
            if os.geteuid() == 0:  # root writes anywhere: make the path a file instead
                reader.directory = Path("/proc/version")
            for _ in range(3):
                instruments.tasks.add(1, {"task_name": "unwritable", "status": "success"})
                provider.force_flush()
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as logs:
            lines = [line for line in logs.read().splitlines() if "dramatiq_prometheus" in line]
    finally:
        reader.directory.chmod(0o700)
    assert len(lines) == 1 and "tasks are not affected" in lines[0]


def test_first_scrape_after_a_worker_stops_shows_every_series_once(request, instrument):
    """Regression: the flush at worker shutdown made the OTel exporter repeat every series."""
    reader, render = otel_exporter(scope_info_enabled=SCOPE_LABELS)
    provider = MeterProvider(metric_readers=[reader])
    request.addfinalizer(provider.shutdown)
    instrument(meter_provider=provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="once", max_retries=0)
    def once(fail):
        if fail:
            raise ValueError("no")

    once.send(False)
    once.send(True)
    process_all(broker, "once")  # starts and stops a Worker

    first = samples(render())
    tasks = [s for s in first if s.name == "dramatiq_tasks_total"]
    assert sorted(s.labels["status"] for s in tasks) == ["failure", "success"]
    keys = [(s.name, tuple(sorted(s.labels.items()))) for s in first]
    assert len(keys) == len(set(keys))


def test_worker_processes_of_the_command_flush_metrics_at_shutdown(monkeypatch):
    """In a ``dramatiq`` worker process (after_process_boot) the shutdown flush writes the snapshot."""
    monkeypatch.delenv(SERVER_ENV, raising=False)
    reader = DramatiqPrometheusMetricReader(host="127.0.0.1", port=free_port(), export_interval=3600)
    provider = MeterProvider(metric_readers=[reader])
    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

    instrumentor = DramatiqInstrumentor()
    instrumentor.instrument(meter_provider=provider, tracer_provider=TracerProvider())
    try:
        broker = StubBroker()
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="flushed")
        def flushed():
            return None

        flushed.send()

        def body() -> None:
            broker.emit_after("process_boot")
            process_all(broker, "flushed")  # the Worker's shutdown must write this child's counts

        pid, _ = in_child(body)
        os.waitpid(pid, 0)
        _, text = scrape(reader.port)
        assert values(text, "dramatiq_tasks_total", task_name="flushed", status="success") == [1.0]
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_standard_prometheus_exporter_in_a_worker_process_logs_one_warning(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp, prometheus")
    broker = StubBroker()
    from opentelemetry_instrumentation_dramatiq_cfg import OpenTelemetryMiddleware

    broker.middleware.insert(0, OpenTelemetryMiddleware())
    with caplog.at_level(logging.WARNING):
        broker.emit_after("process_boot")
        broker.emit_after("process_boot")
    (warning,) = [r for r in caplog.records if "dramatiq_prometheus" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "OTEL_METRICS_EXPORTER=prometheus" in warning.getMessage()


def test_no_warning_with_the_multi_process_exporter(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "dramatiq_prometheus")
    with caplog.at_level(logging.WARNING):
        processes.mark_worker_process()
        processes.warn_about_standard_prometheus()
    assert not [r for r in caplog.records if "dramatiq_prometheus" in r.getMessage()]
