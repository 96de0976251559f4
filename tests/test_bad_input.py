"""Bad input never fails a message: garbage trace context, unrepresentable or huge arguments."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.propagation import MAX_FIELD_LENGTH

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=64),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
W3C_LIKE = st.from_regex(r"\A00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\Z")
garbage = (
    json_values
    | W3C_LIKE
    | st.text(alphabet="0123456789abcdef-", min_size=40, max_size=70)
    | st.text(min_size=MAX_FIELD_LENGTH - 2, max_size=MAX_FIELD_LENGTH + 2)
    | st.builds(lambda n: "x" * n, st.integers(MAX_FIELD_LENGTH, 200_000))
)
carrier_keys = st.sampled_from(["traceparent", "tracestate", "baggage"])


def _process(middleware: OpenTelemetryMiddleware, broker: dramatiq.Broker, message: Any) -> None:
    proxy = MessageProxy(message)
    middleware.before_process_message(broker, proxy)
    middleware.after_process_message(broker, proxy, result=None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.dictionaries(carrier_keys, garbage, min_size=1, max_size=3))
def test_garbage_trace_context_starts_a_new_trace_and_never_raises(tracer_provider, span_exporter, options):
    span_exporter.clear()
    broker = StubBroker(middleware=[])
    middleware = OpenTelemetryMiddleware(tracer_provider=tracer_provider, metrics_enabled=False)
    broker.add_middleware(middleware)
    message = dramatiq.Message(
        queue_name="default", actor_name="a", args=(), kwargs={}, options=dict(options)
    )
    message = dramatiq.Message.decode(message.encode())  # what a real broker hands the worker
    before = otel_context.get_current()

    _process(middleware, broker, message)

    assert otel_context.get_current() == before
    spans = span_exporter.get_finished_spans()
    if not spans:  # a well-formed parent that was not sampled: the sampler follows it
        assert str(options.get("traceparent", "")).endswith("-00")
        return
    (span,) = spans
    assert span.name == "process default" and span.attributes["messaging.dramatiq.outcome"] == "success"
    if span.parent is not None:  # only a well-formed traceparent may become the parent
        traceparent = options["traceparent"]
        assert isinstance(traceparent, str)
        assert traceparent == (
            f"00-{trace.format_trace_id(span.context.trace_id)}-{trace.format_span_id(span.parent.span_id)}"
            f"-{traceparent[-2:]}"
        )
    stored = json.dumps(dict(span.attributes)) + json.dumps([dict(e.attributes or {}) for e in span.events])
    assert len(stored) < 2_000  # nothing of the garbage is kept on the span


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_captured_arguments_are_truncated_and_never_raise(tracer_provider, span_exporter):
    broker = StubBroker(middleware=[])
    middleware = OpenTelemetryMiddleware(
        tracer_provider=tracer_provider, metrics_enabled=False, capture_args=True, capture_args_max_length=100
    )
    broker.add_middleware(middleware)
    huge = {"rows": [list(range(1_000))] * 1_000, "text": "y" * 1_000_000}
    for args, kwargs in [((Unrepresentable(),), {}), ((huge,), {"more": huge}), (("short",), {"n": 1})]:
        _process(middleware, broker, dramatiq.Message("default", "a", args, kwargs, {}))

    captured = [
        (
            span.attributes["messaging.dramatiq.message.args"],
            span.attributes["messaging.dramatiq.message.kwargs"],
        )
        for span in span_exporter.get_finished_spans()
    ]
    assert captured[0][0].startswith("(<Unrepresentable instance at") and captured[0][1] == "{}"
    assert all(len(text) <= 100 for pair in captured[1:2] for text in pair)
    assert captured[1][0].endswith("...") or len(captured[1][0]) < 100
    assert captured[2] == ("('short',)", "{'n': 1}")
