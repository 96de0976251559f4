"""With only the OpenTelemetry API (no SDK configured), the middleware passes context on and costs
next to nothing; an SDK installed later is picked up without re-instrumenting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

#: Instrument, then create a StubBroker with one actor, ``task``, in a fresh interpreter.
PRELUDE = textwrap.dedent(
    """
    import json
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry import trace
    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

    DramatiqInstrumentor().instrument()
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor
    def task():
        pass
    """
)

SCRIPT = PRELUDE + textwrap.dedent(
    """
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    out = {"plain": dict(task.send().options)}
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(remote)):
        out["inside_remote_span"] = dict(task.send().options)

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    task.send()
    out["spans_after_sdk"] = [span.name for span in exporter.get_finished_spans()]
    print(json.dumps(out))
    """
)


def test_without_sdk_context_is_passed_on_and_a_later_sdk_is_picked_up():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    assert "traceparent" not in out["plain"]
    assert out["inside_remote_span"]["traceparent"] == (
        "00-00000000000000000000000000001234-0000000000005678-01"
    )
    assert out["spans_after_sdk"] == ["send default"]


PROVIDER_FROM_ENV = PRELUDE + textwrap.dedent(
    """
    options = task.send().options
    print(json.dumps({
        "provider": type(trace.get_tracer_provider()).__module__,
        "traceparent": options.get("traceparent"),
    }))
    """
)


def test_a_tracer_provider_named_by_environment_variable_is_not_mistaken_for_no_sdk():
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}
    result = subprocess.run(
        [sys.executable, "-c", PROVIDER_FROM_ENV], capture_output=True, text=True, check=True, env=env
    )
    out = json.loads(result.stdout)
    assert out["provider"] == "opentelemetry.sdk.trace"
    # A send span was recorded (the SDK's provider samples by default) and its context injected.
    version, _trace_id, _span_id, flags = out["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
