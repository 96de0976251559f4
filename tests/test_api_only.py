"""With only the OpenTelemetry API (no SDK configured), the middleware passes context on and costs
next to nothing; an SDK installed later is picked up without re-instrumenting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

    DramatiqInstrumentor().instrument()
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor
    def task():
        pass

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
