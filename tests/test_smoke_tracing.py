from __future__ import annotations

import dramatiq
from opentelemetry.trace import SpanKind

from .conftest import spans_named, wait_processed


def test_process_span_is_child_of_send_span(broker, start_worker, queue_name, span_exporter):
    @dramatiq.actor(queue_name=queue_name)
    def add(x, y):
        return x + y

    message = add.send(1, 2)
    worker = start_worker()
    wait_processed(broker, queue_name, worker)

    (send,) = spans_named(span_exporter, f"send {queue_name}")
    (process,) = spans_named(span_exporter, f"process {queue_name}")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.attributes["messaging.message.id"] == message.message_id
