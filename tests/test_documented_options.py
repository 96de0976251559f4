"""One behaviour test per documented option and variable that no other test exercised (issue 24):
what the option changes in spans, metrics, context or answers, not how it is parsed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.hooks import TaskOutcome

from .conftest import process_all
from .test_metrics import counter_values, points, task_key

#: What the hooks named by dotted path below received.
COMPLETED: list[TaskOutcome] = []
PUBLISHED: list[str] = []


def record_completion(outcome: TaskOutcome) -> None:
    COMPLETED.append(outcome)


def record_publish(span: Any, message: Any) -> None:
    PUBLISHED.append(span.name)


@pytest.fixture
def stub() -> StubBroker:
    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    return broker


def seen_by_actor(
    broker: StubBroker, queue_name: str, send: Callable[[dramatiq.Actor[Any, Any]], None]
) -> dict[str, Any]:
    """Run one message through a worker; what its actor saw of the current context."""
    seen: dict[str, Any] = {}

    @dramatiq.actor(queue_name=queue_name)
    def observe():
        span_context = trace.get_current_span().get_span_context()
        seen.update(
            trace_id=span_context.trace_id,
            trace_state=span_context.trace_state.to_header(),
            tenant=baggage.get_baggage("tenant"),
        )

    send(observe)
    process_all(broker, queue_name)
    return seen


@pytest.mark.parametrize("switch", ["keyword", "environment"])
def test_with_traces_off_no_span_is_made_and_the_context_still_reaches_the_actor(
    switch, monkeypatch, instrument, tracer_provider, span_exporter, queue_name
):
    if switch == "keyword":
        instrument(traces_enabled=False)
    else:
        monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_TRACES_ENABLED", "false")
        instrument()
    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    user_tracer = tracer_provider.get_tracer("the-users-web-app")

    def send(actor: dramatiq.Actor[Any, Any]) -> None:
        with user_tracer.start_as_current_span("request"):
            actor.send()

    seen = seen_by_actor(broker, queue_name, send)

    (request,) = span_exporter.get_finished_spans()  # the user's span only: no send/process span
    assert request.name == "request"
    assert seen["trace_id"] == request.context.trace_id


def test_baggage_and_tracestate_reach_the_actor(instrumented, stub, queue_name, span_exporter):
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque-value")]),
    )

    def send(actor: dramatiq.Actor[Any, Any]) -> None:
        ctx = baggage.set_baggage("tenant", "acme", trace.set_span_in_context(NonRecordingSpan(parent)))
        token = context.attach(ctx)
        try:
            actor.send()
        finally:
            context.detach(token)

    seen = seen_by_actor(stub, queue_name, send)

    assert seen == {"trace_id": parent.trace_id, "trace_state": "vendor=opaque-value", "tenant": "acme"}
    process = next(s for s in span_exporter.get_finished_spans() if s.name.startswith("process"))
    assert process.context.trace_id == parent.trace_id


def test_completion_hooks_named_in_the_environment_see_every_attempt(
    monkeypatch, instrument, stub, queue_name
):
    COMPLETED.clear()
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_COMPLETION_HOOKS", f"{__name__}.record_completion")
    instrument()

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def maybe(fail):
        if fail:
            raise ValueError("no")

    maybe.send(False)
    maybe.send(True)
    process_all(stub, queue_name)

    assert sorted(o.outcome for o in COMPLETED) == ["failed", "success"]
    assert {o.actor_name for o in COMPLETED} == {"maybe"}


def test_a_publish_hook_given_by_dotted_path_is_called_with_the_send_span(instrument, stub, queue_name):
    PUBLISHED.clear()
    instrument(publish_hook=f"{__name__}.record_publish")

    @dramatiq.actor(queue_name=queue_name)
    def sent():
        return None

    sent.send()
    assert [f"send {queue_name}"] == PUBLISHED


def test_queue_metrics_off_in_the_environment_leaves_the_task_metrics(
    monkeypatch, instrument, metric_reader, stub, queue_name
):
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_ENABLED", "false")
    instrument()

    @dramatiq.actor(queue_name=queue_name)
    def counted():
        return None

    counted.send()
    counted.send()  # left pending: a queue gauge would read 1
    process_all(stub, queue_name)
    counted.send()

    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("counted", "success"): 2}
    for gauge in (semconv.METRIC_QUEUE_DEPTH, semconv.METRIC_QUEUE_DELAYED, semconv.METRIC_WORKERS):
        assert points(metric_reader, gauge) == [], gauge


def test_the_queue_metrics_interval_reuses_one_read(instrument, metric_reader, stub, queue_name):
    instrument(queue_metrics_interval=3600)

    @dramatiq.actor(queue_name=queue_name)
    def waiting():
        return None

    waiting.send()
    first = {p.attributes["queue_name"]: p.value for p in points(metric_reader, semconv.METRIC_QUEUE_DEPTH)}
    waiting.send()
    second = {p.attributes["queue_name"]: p.value for p in points(metric_reader, semconv.METRIC_QUEUE_DEPTH)}

    assert first == second == {queue_name: 1}  # the second message is not read within the hour
    assert stub.queues[queue_name].qsize() == 2


def test_arguments_are_not_captured_unless_asked(instrument, stub, queue_name, span_exporter):
    instrument()

    @dramatiq.actor(queue_name=queue_name)
    def private(secret):
        return None

    private.send("card-number-4111")
    process_all(stub, queue_name)

    spans = span_exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert semconv.DRAMATIQ_ARGS not in span.attributes and semconv.DRAMATIQ_KWARGS not in span.attributes
        assert "card-number" not in str(dict(span.attributes))


def test_captured_arguments_are_cut_at_the_default_length(instrument, stub, queue_name, span_exporter):
    instrument(capture_args=True)

    @dramatiq.actor(queue_name=queue_name)
    def long_one(text):
        return None

    long_one.send("x" * 5000)
    process_all(stub, queue_name)

    for span in span_exporter.get_finished_spans():
        captured = span.attributes[semconv.DRAMATIQ_ARGS]
        assert len(captured) == 1024 and captured.endswith("...") and captured.startswith("('xxx")


@pytest.mark.parametrize("option", ["excluded_actors", "excluded_queues"])
def test_excluded_actors_and_queues_are_left_out_of_the_metrics_too(
    option, instrument, metric_reader, stub, queue_name
):
    other_queue = f"{queue_name}-other"
    instrument(**{option: ["hidden"] if option == "excluded_actors" else [other_queue]})

    @dramatiq.actor(queue_name=other_queue)
    def hidden():
        return None

    @dramatiq.actor(queue_name=queue_name)
    def shown():
        return None

    hidden.send()
    shown.send()
    process_all(stub, queue_name, other_queue)

    assert counter_values(metric_reader, "dramatiq.tasks") == {task_key("shown", "success"): 1}
    (sent,) = points(metric_reader, "messaging.client.sent.messages")
    assert sent.value == 1 and sent.attributes["messaging.destination.name"] == queue_name
    (duration,) = points(metric_reader, "dramatiq.task.duration")
    assert duration.attributes["task_name"] == "shown"


# -- the dramatiq_prometheus exporter's variables --------------------------------------------------


@pytest.fixture
def prometheus_reader(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    from opentelemetry_instrumentation_dramatiq_cfg.prometheus import DramatiqPrometheusMetricReader
    from opentelemetry_instrumentation_dramatiq_cfg.prometheus.reader import SERVER_ENV

    from .prometheus_server import free_port

    monkeypatch.delenv(SERVER_ENV, raising=False)
    providers: list[MeterProvider] = []

    def make() -> tuple[Any, MeterProvider]:
        reader = DramatiqPrometheusMetricReader(host="127.0.0.1", port=free_port(), export_interval=60)
        providers.append(MeterProvider(metric_readers=[reader]))
        return reader, providers[-1]

    yield make
    for provider in providers:
        provider.shutdown()


def test_the_prometheus_dir_variable_is_used_and_an_earlier_runs_snapshots_removed(
    monkeypatch, tmp_path, prometheus_reader
):
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = directory / "4242-1700000000000000000.json"
    stale.write_text('{"stale": true}')
    unrelated = directory / "README"
    unrelated.write_text("kept")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_PROMETHEUS_DIR", str(directory))

    reader, _ = prometheus_reader()

    assert reader.directory == directory
    assert not stale.exists() and unrelated.read_text() == "kept"


@pytest.mark.parametrize("variable", ["SCOPE_INFO", "TARGET_INFO"])
def test_the_prometheus_scope_and_target_info_variables_turn_them_off(
    variable, monkeypatch, instrument, prometheus_reader
):
    from .test_prometheus_endpoint import samples, scrape

    monkeypatch.setenv(f"OTEL_PYTHON_DRAMATIQ_PROMETHEUS_{variable}", "false")
    reader, provider = prometheus_reader()
    instrument(meter_provider=provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="scoped")
    def scoped():
        return None

    scoped.send()
    process_all(broker, "scoped")

    found = samples(scrape(reader.port)[1])
    (tasks,) = [s for s in found if s.name == "dramatiq_tasks_total"]
    has_scope = any(k.startswith("otel_scope_") for k in tasks.labels)
    has_target = any(s.name == "target_info" for s in found)
    assert (has_scope, has_target) == ((False, True) if variable == "SCOPE_INFO" else (True, False))
