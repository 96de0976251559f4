"""The README's demo (docs/index.md): traced Dramatiq actors on the embedded StubBroker, no service needed.

Run it with ``python examples/quickstart.py``. It configures the OpenTelemetry SDK, instruments
Dramatiq, sends a few messages to actors that succeed, retry then succeed, and fail for good,
processes them with an in-process worker, then prints each trace as Jaeger would show it (an indented
tree of spans with their durations and outcomes) and the guide's ``dramatiq_tasks_total`` counts.
``--json`` prints the raw spans instead (one JSON document per span, as the SDK's console exporter
writes them; the counts go to stderr). Swap the in-memory exporter for an OTLP one (see docs/usage.md) to
see the same in Jaeger.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

resource = Resource.create({"service.name": "dramatiq-quickstart"})
tracer_provider = TracerProvider(resource=resource)
spans = InMemorySpanExporter()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
metric_reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[metric_reader], resource=resource)

DramatiqInstrumentor().instrument(meter_provider=meter_provider)

broker = StubBroker()
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
tracer = trace.get_tracer("quickstart")


@dramatiq.actor
def add(x: int, y: int) -> None:
    with tracer.start_as_current_span("add.compute"):  # a child of the process span
        print(f"add({x}, {y}) = {x + y}", file=sys.stderr)


@dramatiq.actor(max_retries=3, min_backoff=10, max_backoff=50)
def flaky(data_id: int) -> None:
    retries = CurrentMessage.get_current_message().options.get("retries", 0)
    if retries < 2:
        raise ConnectionError(f"attempt {retries + 1} for data {data_id} failed, will retry")


@dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=50)
def broken(data_id: int) -> None:
    raise ValueError(f"data {data_id} is corrupt")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw spans as JSON instead of trees")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # keep Dramatiq's own retry logs out of the demo
    with tracer.start_as_current_span("quickstart.request"):
        add.send(1, 2)
        flaky.send(42)
        broken.send(7)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    broker.join(add.queue_name, fail_fast=False)
    worker.join()
    worker.stop()

    finished = spans.get_finished_spans()
    if args.json:
        for span in finished:
            print(span.to_json())
        print_counts(sys.stderr)
    else:
        print_traces(finished)
        print_counts(sys.stdout)


def print_traces(finished: Sequence[ReadableSpan]) -> None:
    """Each trace as an indented tree, children in start order, as Jaeger's trace view shows it."""
    children: dict[int | None, list[ReadableSpan]] = {}
    ids = {span.context.span_id for span in finished}
    for span in sorted(finished, key=lambda span: span.start_time or 0):
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)

    def show(span: ReadableSpan, prefix: str, last: bool, root: bool = False) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        print(f"{prefix}{branch}{describe(span, by_id)}")
        below = children.get(span.context.span_id, [])
        for index, child in enumerate(below):
            show(child, prefix + ("" if root else ("   " if last else "│  ")), index == len(below) - 1)

    by_id = {span.context.span_id: span for span in finished}
    for root in children.get(None, []):
        print(f"trace {root.context.trace_id:032x}")
        show(root, "  ", True, root=True)
        print()


def describe(span: ReadableSpan, by_id: dict[int, ReadableSpan] | None = None) -> str:
    """One line per span, with the kinds and links the messaging conventions set (see
    docs/semantic-conventions.md): ``send default [flaky] PRODUCER  0.2 ms``,
    ``process default [flaky] attempt 1 CONSUMER link→parent  1.0 ms  retry  ERROR ConnectionError: ...``,
    ``send default [flaky] (retry) CLIENT link→send default [flaky]  0.1 ms``."""
    attributes = span.attributes or {}
    text = span.name
    actor = attributes.get("messaging.dramatiq.actor.name")
    if actor:
        text += f" [{actor}]"
    if attributes.get("messaging.dramatiq.reenqueue"):
        text += " (retry)"
    if attributes.get("messaging.operation.type") == "process":
        text += f" attempt {int(attributes.get('messaging.dramatiq.message.retries', 0)) + 1}"
    if "messaging.operation.type" in attributes:
        text += f" {span.kind.name}"
    for link in span.links:
        if span.parent is not None and link.context.span_id == span.parent.span_id:
            text += " link→parent"
        else:
            linked = (by_id or {}).get(link.context.span_id)
            linked_actor = (linked.attributes or {}).get("messaging.dramatiq.actor.name") if linked else None
            label = f"{linked.name} [{linked_actor}]" if linked and linked_actor else "another trace"
            text += f" link→{label}"
    duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    text += f"  {duration:.1f} ms"
    outcome = attributes.get("messaging.dramatiq.outcome")
    if outcome:
        text += f"  {outcome}"
    if span.status.status_code is StatusCode.ERROR:
        error_type, description = attributes.get("error.type", ""), span.status.description
        text += f"  ERROR {error_type}: {description}" if description else f"  ERROR {error_type}"
    return text


def print_counts(file: TextIO) -> None:
    print("dramatiq_tasks_total:", file=file)
    data = metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == "dramatiq.tasks":
                    for point in metric.data.data_points:
                        labels = ",".join(f'{k}="{v}"' for k, v in sorted(point.attributes.items()))
                        print(f"  dramatiq_tasks_total{{{labels}}} {point.value}", file=file)


if __name__ == "__main__":
    main()
