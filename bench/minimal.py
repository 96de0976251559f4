"""A reference, not a product: the bare OpenTelemetry calls of a messaging instrumentation in Dramatiq's
hooks, and nothing else.

Used by ``bench/overhead.py`` (per-message cost) and ``bench/load.py --reference`` (throughput under
load) to show what any span-per-message instrumentation costs at least: ``send``/``process`` spans,
context injected and extracted, the process span current while the actor runs. No metrics, no error
handling, no outcome, no guard; with ``attributes=True`` the spans carry the attributes this package
sets on a successful message (same keys, same kinds of values; ``server.address``/``server.port``
for a Redis broker).
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_dramatiq_cfg import semconv


class MinimalMiddleware(dramatiq.Middleware):  # type: ignore[misc]
    def __init__(self, tracer: trace.Tracer, *, attributes: bool = False) -> None:
        self.tracer = tracer
        self.attributes = attributes
        self.servers: dict[int, dict[str, Any]] = {}
        self.local = threading.local()  # worker threads process messages concurrently

    def _attributes(self, operation: str, message: Any, broker: Any) -> dict[str, Any] | None:
        if not self.attributes:
            return None
        server = self.servers.get(id(broker))
        if server is None:
            server = self.servers[id(broker)] = _server(broker)
        attributes: dict[str, Any] = {
            **server,
            semconv.MESSAGING_SYSTEM: semconv.SYSTEM,
            semconv.MESSAGING_OPERATION_NAME: operation,
            semconv.MESSAGING_DESTINATION_NAME: message.queue_name,
            semconv.MESSAGING_OPERATION_TYPE: operation,
            semconv.MESSAGING_MESSAGE_ID: message.message_id,
            semconv.DRAMATIQ_ACTOR_NAME: message.actor_name,
        }
        if operation == semconv.OPERATION_PROCESS:
            attributes[semconv.DRAMATIQ_RETRY_COUNT] = 0
        return attributes

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        span = self.tracer.start_span(
            f"send {message.queue_name}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(semconv.OPERATION_SEND, message, broker),
        )
        self.local.send_span = span
        propagate.inject(message.options, context=trace.set_span_in_context(span))

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.local.send_span.end()

    def before_process_message(self, broker: Any, message: Any) -> None:
        span = self.tracer.start_span(
            f"process {message.queue_name}",
            context=propagate.extract(message.options),
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(semconv.OPERATION_PROCESS, message, broker),
        )
        self.local.process_span = span
        self.local.token = otel_context.attach(trace.set_span_in_context(span))

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        span = self.local.process_span
        if self.attributes:
            span.set_attribute(semconv.DRAMATIQ_OUTCOME, semconv.OUTCOME_SUCCESS)
        otel_context.detach(self.local.token)
        span.end()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Forked workers end with os._exit: without this, the spans still queued would be lost.
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()


def _server(broker: Any) -> dict[str, Any]:
    """``server.address``/``server.port`` of a Redis broker (none for others)."""
    pool = getattr(getattr(broker, "client", None), "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    host, port = kwargs.get("host"), kwargs.get("port")
    if isinstance(host, str) and isinstance(port, int):
        return {semconv.SERVER_ADDRESS: host, semconv.SERVER_PORT: port}
    return {}
