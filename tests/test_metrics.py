"""Metrics recorded by the middleware: semantic-convention instruments and the guide's series."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import AgeLimit
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from opentelemetry_instrumentation_dramatiq_cfg.metrics import instruments_for
from opentelemetry_instrumentation_dramatiq_cfg.middleware import DUE_OPTION

from .conftest import process_all, server_attributes, wait_processed
from .otel_prometheus import SCOPE_LABELS, otel_exporter


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def by_attributes(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(point.attributes.items()): point for point in points(reader, name)}


def counter_values(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], int]:
    return {key: point.value for key, point in by_attributes(reader, name).items()}


def task_key(task: str, status: str) -> frozenset[tuple[str, Any]]:
    return frozenset({("task_name", task), ("status", status)})


def test_successful_task_counts_success_and_records_durations(
    broker, broker_kind, start_worker, queue_name, metric_reader
):
    @dramatiq.actor(queue_name=queue_name)
    def fine(x):
        return None

    for i in range(3):
        fine.send(i)
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("fine", "success"): 3}
    (duration,) = points(metric_reader, "dramatiq.task.duration")
    assert dict(duration.attributes) == {"task_name": "fine"}
    assert duration.count == 3
    semconv_attributes = {
        "messaging.system": "dramatiq",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue_name,
        **server_attributes(broker_kind),
    }
    (process,) = points(metric_reader, "messaging.process.duration")
    assert dict(process.attributes) == semconv_attributes
    assert process.count == 3
    assert list(process.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    (consumed,) = points(metric_reader, "messaging.client.consumed.messages")
    assert (dict(consumed.attributes), consumed.value) == (semconv_attributes, 3)
    send_attributes = {**semconv_attributes, "messaging.operation.name": "send"}
    (sent,) = points(metric_reader, "messaging.client.sent.messages")
    assert (dict(sent.attributes), sent.value) == (send_attributes, 3)
    (send_duration,) = points(metric_reader, "messaging.client.operation.duration")
    assert dict(send_duration.attributes) == {**send_attributes, "messaging.operation.type": "send"}
    assert send_duration.count == 3


def test_retries_then_final_failure_are_counted_apart(
    broker, broker_kind, start_worker, queue_name, metric_reader
):
    @dramatiq.actor(queue_name=queue_name, max_retries=2, min_backoff=10, max_backoff=20)
    def doomed():
        raise ValueError("always")

    doomed.send()
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    assert counter_values(metric_reader, "dramatiq.tasks") == {
        task_key("doomed", "retry"): 2,
        task_key("doomed", "failure"): 1,
    }
    assert counter_values(metric_reader, "dramatiq.retries") == {frozenset({("task_name", "doomed")}): 2}
    assert counter_values(metric_reader, "dramatiq.dead_lettered") == {
        frozenset({("task_name", "doomed"), ("queue_name", queue_name)}): 1
    }
    # Every delivery is counted without error.type (the delivery did not fail); every failed attempt
    # is a process duration with error.type.
    attributes = {
        "messaging.system": "dramatiq",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue_name,
        **server_attributes(broker_kind),
    }
    consumed = counter_values(metric_reader, "messaging.client.consumed.messages")
    assert consumed == {frozenset(attributes.items()): 3}
    (process,) = points(metric_reader, "messaging.process.duration")
    assert (dict(process.attributes), process.count) == ({**attributes, "error.type": "ValueError"}, 3)


def test_skipped_message_is_counted_as_skipped(broker, start_worker, queue_name, metric_reader):
    @dramatiq.actor(queue_name=queue_name, max_age=1)
    def stale():
        raise AssertionError("a skipped message must not run")

    assert any(isinstance(m, AgeLimit) for m in broker.middleware)
    message = stale.message()
    broker.enqueue(message.copy(message_timestamp=message.message_timestamp - 60_000))
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("stale", "skipped"): 1}
    assert points(metric_reader, "dramatiq.task.duration") == []  # the guide's: run time of tasks that ran
    # The conventions': every operation of type process, a skip included (messaging-metrics.md).
    (process,) = points(metric_reader, "messaging.process.duration")
    assert process.count == 1 and "error.type" not in process.attributes


def test_delayed_message_waits_are_measured_from_its_eta(broker, start_worker, queue_name, metric_reader):
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(queue_name=queue_name)
    def later():
        return None

    class Spy(dramatiq.Middleware):  # type: ignore[misc]
        def before_process_message(self, broker, message):
            seen.append(dict(message.options))

    broker.add_middleware(Spy())
    sent = later.send_with_options(delay=50)
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    (options,) = seen
    assert options[DUE_OPTION] == sent.options["eta"]
    (wait,) = points(metric_reader, "dramatiq.queue.wait.duration")
    assert dict(wait.attributes) == {"task_name": "later", "queue_name": queue_name}
    assert wait.count == 1
    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("later", "success"): 1}


def test_in_flight_returns_to_zero_after_processing(broker, start_worker, queue_name, metric_reader):
    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def maybe(fail):
        if fail:
            raise RuntimeError("no")

    maybe.send(False)
    maybe.send(True)
    worker = start_worker(threads=2)
    wait_processed(broker, queue_name, worker)

    (in_flight,) = points(metric_reader, "dramatiq.worker.message.active")
    assert (dict(in_flight.attributes), in_flight.value) == ({"queue_name": queue_name}, 0)


def test_metrics_can_be_turned_off_while_traces_stay(
    instrument, queue_name, metric_reader, span_exporter, tracer_provider
):
    from dramatiq.brokers.stub import StubBroker

    instrument(metrics_enabled=False)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name)
    def quiet():
        return None

    quiet.send()
    process_all(broker, queue_name)

    assert points(metric_reader, "dramatiq.tasks") == []
    assert sorted(span.name for span in span_exporter.get_finished_spans()) == [
        f"process {queue_name}",
        f"send {queue_name}",
    ]


def test_instruments_are_created_once_per_meter_provider(meter_provider):
    assert instruments_for(meter_provider) is instruments_for(meter_provider)
    assert instruments_for(meter_provider) is not instruments_for(None)


@pytest.mark.parametrize("scope_info_enabled", [False, True])
def test_prometheus_exporter_renders_the_guides_series(request, instrument, queue_name, scope_info_enabled):
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client.parser import text_string_to_metric_families

    reader, render = otel_exporter(scope_info_enabled)
    meter_provider = MeterProvider(metric_readers=[reader])
    request.addfinalizer(meter_provider.shutdown)
    instrument(meter_provider=meter_provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def monitored_task(fail):
        if fail:
            raise RuntimeError("no")

    monitored_task.send(False)
    monitored_task.send(True)
    process_all(broker, queue_name)

    samples = [sample for family in text_string_to_metric_families(render()) for sample in family.samples]

    def labels(sample: Any) -> dict[str, str]:
        return {
            k: v for k, v in sample.labels.items() if scope_info_enabled is False or not k.startswith("otel_")
        }

    tasks = {(s.labels["status"], s.value) for s in samples if s.name == "dramatiq_tasks_total"}
    assert tasks == {("success", 1.0), ("failure", 1.0)}
    assert all(
        labels(s).keys() == {"task_name", "status"} and s.labels["task_name"] == "monitored_task"
        for s in samples
        if s.name == "dramatiq_tasks_total"
    )
    (count,) = [s for s in samples if s.name == "dramatiq_task_duration_seconds_count"]
    assert (labels(count), count.value) == ({"task_name": "monitored_task"}, 2.0)
    assert any(s.name == "dramatiq_task_duration_seconds_bucket" for s in samples)
    scope_labels = {
        k for s in samples if s.name == "dramatiq_tasks_total" for k in s.labels if k.startswith("otel_")
    }
    # The exporter adds otel_scope_* labels from 0.64b0 when asked; before, it has none to add.
    assert bool(scope_labels) is (scope_info_enabled and SCOPE_LABELS)


def test_a_forked_child_does_not_report_its_parents_counts(meter_provider, metric_reader):
    import os

    instruments = instruments_for(meter_provider)
    instruments.tasks.add(5, {"task_name": "parent", "status": "success"})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what would it export?
        os.close(read_fd)
        instruments.tasks.add(1, {"task_name": "child", "status": "success"})
        names = sorted(p.attributes["task_name"] for p in points(metric_reader, "dramatiq.tasks"))
        os.write(write_fd, ",".join(names).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_saw = pipe.read()
    os.waitpid(pid, 0)
    assert child_saw == "child"
    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("parent", "success"): 5}


def test_the_reader_probe_follows_the_sdk_meter_providers_readers(request):
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider

    from opentelemetry_instrumentation_dramatiq_cfg.metrics import reader_probe

    readerless = MeterProvider(shutdown_on_exit=False)
    with_reader = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    request.addfinalizer(with_reader.shutdown)

    readerless_probe, with_reader_probe = reader_probe(readerless), reader_probe(with_reader)
    assert readerless_probe is not None and with_reader_probe is not None
    assert (readerless_probe(), with_reader_probe()) == (False, True)
    assert reader_probe(NoOpMeterProvider()) is None  # not the SDK's: always record
    if hasattr(readerless, "add_metric_reader"):  # SDK 1.44+
        readerless.add_metric_reader(InMemoryMetricReader())
        assert readerless_probe() is True


def test_nothing_is_recorded_until_the_meter_provider_has_a_reader(
    request, instrument, queue_name, span_exporter
):
    """OTEL_METRICS_EXPORTER=none gives the SDK's MeterProvider with no reader: traces stay, metrics
    are not recorded; a reader added later (SDK 1.44+) gets every message from then on, and the
    in-flight count of a message that started before it is not left unbalanced."""
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.metrics import MeterProvider

    meter_provider = MeterProvider(shutdown_on_exit=False)
    request.addfinalizer(meter_provider.shutdown)
    instrument(meter_provider=meter_provider, queue_metrics_enabled=False)
    broker = StubBroker()
    dramatiq.set_broker(broker)
    reader = InMemoryMetricReader()

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def quiet(add_reader: bool) -> None:
        if add_reader and hasattr(meter_provider, "add_metric_reader"):
            meter_provider.add_metric_reader(reader)  # while this message is in flight

    quiet.send(True)
    process_all(broker, queue_name)

    assert sorted(span.name for span in span_exporter.get_finished_spans()) == [
        f"process {queue_name}",
        f"send {queue_name}",
    ]
    if not hasattr(meter_provider, "add_metric_reader"):
        pytest.skip("MeterProvider.add_metric_reader is new in SDK 1.44")
    assert points(reader, "dramatiq.tasks") == []  # that message started before the reader

    quiet.send(False)
    quiet.send(False)
    process_all(broker, queue_name)

    assert counter_values(reader, "dramatiq.tasks") == {task_key("quiet", "success"): 2}
    (in_flight,) = points(reader, "dramatiq.worker.message.active")
    assert in_flight.value == 0
    (sent,) = points(reader, "messaging.client.sent.messages")
    assert sent.value == 2


@pytest.mark.parametrize("traces_enabled", [True, False])
def test_the_workers_move_of_a_due_message_is_not_a_send(
    instrument, queue_name, metric_reader, traces_enabled
):
    """sent.messages counts the application's sends and Retries' re-sends, never the worker moving a
    due message from the delay queue, with or without traces (0.1.x counted the move without them)."""
    from dramatiq.brokers.stub import StubBroker

    instrument(traces_enabled=traces_enabled)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name, max_retries=1, min_backoff=1, max_backoff=2)
    def sometimes(fail):
        if fail:
            raise ValueError("once")

    sometimes.send(True)  # a send, then Retries' re-send (delayed), then the worker's move
    sometimes.send_with_options(args=(False,), delay=1)  # a send, then the worker's move
    process_all(broker, queue_name)

    (sent,) = points(metric_reader, "messaging.client.sent.messages")
    assert sent.value == 3
    (duration,) = points(metric_reader, "messaging.client.operation.duration")
    assert duration.count == 3
