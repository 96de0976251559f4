"""Repro (plain pika + opentelemetry-instrumentation-pika, none of this package's code).

Publishes one message and consumes it with ``BlockingChannel.consume`` (as Dramatiq's RabbitMQ
consumer does), once normally and once inside ``suppress_instrumentation()``. Prints the spans and
whatever the pika instrumentation logs. Run: ``python tests/repros/pika_suppressed_consume.py``
against RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import nullcontext as _nullcontext

import pika
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

logging.basicConfig(level=logging.WARNING, format="LOG %(levelname)s %(name)s: %(message)s")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
PikaInstrumentor().instrument(tracer_provider=provider)

queue = f"repro-{uuid.uuid4().hex[:8]}"
connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
channel = connection.channel()
channel.queue_declare(queue)
try:
    for suppressed in (False, True):
        exporter.clear()
        with suppress_instrumentation() if suppressed else _nullcontext():
            channel.basic_publish("", queue, b"body", pika.BasicProperties(headers={}))
        consumer = channel.consume(queue, inactivity_timeout=2)
        with suppress_instrumentation() if suppressed else _nullcontext():
            method, properties, body = next(consumer)
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        print(f"suppressed={suppressed}: AMQP headers {properties.headers}")
        for span in exporter.get_finished_spans():
            print(f"  span {span.name!r} kind={span.kind.name} parent={span.parent is not None}")
finally:
    channel.queue_delete(queue)
    connection.close()
