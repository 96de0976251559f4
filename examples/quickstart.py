"""The README's demo: traced Dramatiq actors on the embedded StubBroker, no service needed.

Run it with ``python examples/quickstart.py``. It configures the OpenTelemetry SDK with the console
exporter, instruments Dramatiq, sends a few messages to actors that succeed, retry then succeed, and
fail for good, processes them with an in-process worker, then prints every span (JSON, one per span)
and the guide's metric series. Point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a collector and swap the
console exporters for OTLP ones (see README) to see the same in Jaeger.
"""

from __future__ import annotations

import logging
import sys

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

resource = Resource.create({"service.name": "dramatiq-quickstart"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
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


def main() -> None:
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

    print("\ndramatiq_tasks_total:", file=sys.stderr)
    data = metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == "dramatiq.tasks":
                    for point in metric.data.data_points:
                        labels = ",".join(f'{k}="{v}"' for k, v in sorted(point.attributes.items()))
                        print(f"  dramatiq_tasks_total{{{labels}}} {point.value}", file=sys.stderr)


if __name__ == "__main__":
    main()
