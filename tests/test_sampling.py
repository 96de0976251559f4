"""Head sampling: unsampled messages keep their context, cost no attribute work, and are counted.

Also the ``metrics_set`` option, which keeps one metric family only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, SkipMessage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor
from opentelemetry_instrumentation_dramatiq_cfg.config import Options

from .conftest import process_all, wait_processed

#: What the messaging conventions mark as sampling-relevant (given at span start), for our spans.
SAMPLING_RELEVANT = {
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.destination.name",
    "server.address",
    "server.port",
}


class RecordingSampler(Sampler):
    """Delegates to ``sampler`` and keeps what each decision was given."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.calls: list[dict[str, Any]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        result = self.sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        self.calls.append(
            {
                "name": name,
                "trace_id": trace_id,
                "parent_span_id": parent.span_id if parent.is_valid else None,
                "attributes": dict(attributes or {}),
                "sampled": result.decision.is_sampled(),
            }
        )
        return result

    def get_description(self) -> str:
        return f"Recording({self.sampler.get_description()})"


@pytest.fixture
def sampler() -> RecordingSampler:
    """Nothing sampled (what ``parentbased_traceidratio`` does with the 90% it drops)."""
    return RecordingSampler(ParentBased(ALWAYS_OFF))


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter, sampler: RecordingSampler) -> TracerProvider:
    """Overrides conftest's: the same exporter, with the sampler above."""
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


def test_an_unsampled_message_carries_its_context_to_the_worker(
    broker, start_worker, queue_name, sampler, span_exporter, metric_reader
):
    broker.add_middleware(CurrentMessage())
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(queue_name=queue_name)
    def child():
        seen.append({"child": CurrentMessage.get_current_message().options.get("traceparent")})

    @dramatiq.actor(queue_name=queue_name)
    def parent():
        span = trace.get_current_span()
        seen.append(
            {
                "traceparent": CurrentMessage.get_current_message().options.get("traceparent"),
                "context": span.get_span_context(),
                "recording": span.is_recording(),
            }
        )
        child.send()

    parent.send()
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    (inside,) = [entry for entry in seen if "traceparent" in entry]
    (downstream,) = [entry["child"] for entry in seen if "child" in entry]
    _, trace_id, sender_span_id, flags = inside["traceparent"].split("-")
    assert not int(flags, 16) & 1  # traveled with the sampled flag off
    context = inside["context"]
    assert context.is_valid and not context.trace_flags.sampled and not inside["recording"]
    assert f"{context.trace_id:032x}" == trace_id  # the worker continues the producer's trace
    # The worker's span was started as a child of the send span (the sampler saw that parent) ...
    (process_call,) = [
        call
        for call in sampler.calls
        if call["name"] == f"process {queue_name}"
        and call["trace_id"] == context.trace_id
        and call["parent_span_id"] == int(sender_span_id, 16)
    ]
    assert not process_call["sampled"]
    # ... and what the actor sends carries the same unsampled trace on.
    _, child_trace_id, child_parent_id, child_flags = downstream.split("-")
    assert child_trace_id == trace_id and not int(child_flags, 16) & 1
    assert child_parent_id != sender_span_id
    assert span_exporter.get_finished_spans() == ()
    assert metric_reader.get_metrics_data() is not None  # counted all the same (see below for equality)


def test_samplers_see_only_the_sampling_relevant_attributes(broker, start_worker, queue_name, sampler):
    @dramatiq.actor(queue_name=queue_name)
    def task(x):
        return None

    task.send_with_options(args=(1,), delay=1)
    task.send(2)
    wait_processed(broker, queue_name, start_worker())

    ours = [call for call in sampler.calls if call["name"].endswith(queue_name)]
    assert {call["name"].split()[0] for call in ours} == {"send", "process"}
    assert len(ours) == 4
    for call in ours:
        attributes = call["attributes"]
        assert set(attributes) <= SAMPLING_RELEVANT
        assert attributes["messaging.system"] == "dramatiq"
        assert attributes["messaging.destination.name"] == queue_name
        assert attributes["messaging.operation.name"] == call["name"].split()[0]
        assert attributes["messaging.operation.type"] in ("send", "process")
    if type(broker).__name__ != "StubBroker":
        assert all({"server.address", "server.port"} <= set(call["attributes"]) for call in ours)


def _metric_points(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[Any]], Any]:
    """Every point as something comparable: counters by value, histograms by count and bucket counts."""
    found: dict[tuple[str, frozenset[Any]], Any] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, frozenset(point.attributes.items()))
                    if hasattr(point, "bucket_counts"):
                        found[key] = ("histogram", point.count)
                    else:
                        found[key] = ("sum", point.value)
    return found


def _run_workload(sampler: Sampler) -> tuple[dict[Any, Any], int]:
    """Successes, a retried failure, a skipped message, through an instrumented StubBroker."""
    tracer_provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    instrumentor = DramatiqInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        queue_metrics_enabled=False,
    )
    try:
        broker = StubBroker()
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="sampled-q", max_retries=1, min_backoff=1, max_backoff=1)
        def fails():
            raise ValueError("no")

        @dramatiq.actor(queue_name="sampled-q")
        def works(x):
            return x

        @dramatiq.actor(queue_name="sampled-q")
        def skipped():
            return None

        class Skip(dramatiq.Middleware):  # type: ignore[misc]
            def before_process_message(self, broker: Any, message: Any) -> None:
                if message.actor_name == "skipped":
                    raise SkipMessage()

        broker.add_middleware(Skip())
        for i in range(20):
            works.send(i)
        fails.send()
        skipped.send()
        process_all(broker, "sampled-q")
        return _metric_points(reader), len(exporter.get_finished_spans())
    finally:
        instrumentor.uninstrument()


def test_metric_counts_do_not_depend_on_sampling():
    everything, all_spans = _run_workload(ParentBased(ALWAYS_ON))
    nothing, no_spans = _run_workload(ParentBased(ALWAYS_OFF))
    some, some_spans = _run_workload(ParentBased(TraceIdRatioBased(0.5)))
    assert all_spans >= 2 * 23 and no_spans == 0 and some_spans <= all_spans
    assert everything[("dramatiq.tasks", frozenset({("task_name", "works"), ("status", "success")}))] == (
        "sum",
        20,
    )
    assert everything[("dramatiq.retries", frozenset({("task_name", "fails")}))] == ("sum", 1)
    assert nothing == everything
    assert some == everything


def _metric_names(reader: InMemoryMetricReader) -> set[str]:
    return {name for name, _ in _metric_points(reader)}


GUIDE = {"dramatiq.tasks", "dramatiq.task.duration"}
SEMCONV = {
    "messaging.client.operation.duration",
    "messaging.client.sent.messages",
    "messaging.process.duration",
    "messaging.client.consumed.messages",
}
EXTRAS = {
    "dramatiq.queue.wait.duration",
    "dramatiq.worker.message.active",
    "dramatiq.retries",
    "dramatiq.dead_lettered",
}


@pytest.mark.parametrize(
    ("metrics_set", "expected"),
    [("all", GUIDE | SEMCONV | EXTRAS), ("guide", GUIDE), ("semconv", SEMCONV)],
)
def test_the_metrics_set_records_only_its_family(instrument, metric_reader, metrics_set, expected):
    instrument(metrics_set=metrics_set, queue_metrics_enabled=False)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="family-q", max_retries=1, min_backoff=1, max_backoff=1)
    def flaky(x):
        if x == 0:
            raise ValueError("retry me")

    flaky.send(0)
    flaky.send(1)
    process_all(broker, "family-q")

    assert _metric_names(metric_reader) == expected


def test_the_metrics_set_comes_from_the_environment(monkeypatch):
    assert Options.resolve().metrics_set == "all"
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_METRICS_SET", " Guide ")
    assert Options.resolve().metrics_set == "guide"
    assert Options.resolve(metrics_set="semconv").metrics_set == "semconv"  # a keyword argument wins
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_METRICS_SET", "some")
    with pytest.raises(
        ValueError, match="OTEL_PYTHON_DRAMATIQ_METRICS_SET must be one of all, guide, semconv"
    ):
        Options.resolve()


@pytest.mark.parametrize("value", ["Guide", "both", "", 1])
def test_a_bad_metrics_set_argument_names_the_option(instrument, value):
    with pytest.raises(ValueError, match="metrics_set must be one of all, guide, semconv"):
        instrument(metrics_set=value)
    assert not hasattr(dramatiq.Broker.__init__, "__wrapped__")
