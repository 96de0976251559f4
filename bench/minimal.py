"""A reference, not a product: the bare OpenTelemetry calls of a messaging instrumentation in Dramatiq's
hooks, and nothing else.

Used by ``bench/overhead.py`` (per-message cost) and ``bench/load.py --reference`` (throughput under
load) to show what any span-per-message instrumentation costs at least: ``send``/``process`` spans,
context injected and extracted, the process span current while the actor runs and linked to the
creation context (the messaging conventions' "Consumer spans"). No metrics, no error
handling, no outcome, no guard; with ``attributes=True`` the spans carry the attributes this package
sets on a successful message (same keys, same kinds of values; ``server.address``/``server.port``
for a Redis broker; ``messaging.client.id`` on process spans once a worker booted); with
``instruments`` (this package's instruments of a meter provider) it also records what this package's
default metrics record for a successful message: the send duration and count, messages in flight,
the queue wait, the consumed count, ``dramatiq_tasks_total`` and both processing-duration
histograms, attribute dicts written per message as a hand-written instrumentation would.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import dramatiq
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import get_meter_provider
from opentelemetry.trace import Link, SpanKind

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.metrics import Instruments


class MinimalMiddleware(dramatiq.Middleware):  # type: ignore[misc]
    def __init__(
        self, tracer: trace.Tracer, *, attributes: bool = False, instruments: Instruments | None = None
    ) -> None:
        self.tracer = tracer
        self.attributes = attributes
        self.instruments: Any = instruments  # all of them, the default set's
        self.servers: dict[int, dict[str, Any]] = {}
        self.local = threading.local()  # worker threads process messages concurrently
        #: ``messaging.client.id`` of process spans: the worker's, once one booted (one per process here)
        self.client_id: str | None = None

    def _server(self, broker: Any) -> dict[str, Any]:
        server = self.servers.get(id(broker))
        if server is None:
            server = self.servers[id(broker)] = _server(broker)
        return server

    def _attributes(self, operation: str, message: Any, broker: Any) -> dict[str, Any] | None:
        if not self.attributes:
            return None
        server = self._server(broker)
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
            if self.client_id is not None:
                attributes[semconv.MESSAGING_CLIENT_ID] = self.client_id
        return attributes

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        self.client_id = f"{socket.gethostname()}:{os.getpid()}:{id(worker):x}"

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        span = self.tracer.start_span(
            f"send {message.queue_name}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(semconv.OPERATION_SEND, message, broker),
        )
        self.local.send_span = span
        propagate.inject(message.options, context=trace.set_span_in_context(span))
        self.local.send_start = time.perf_counter()

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.local.send_span.end()
        instruments = self.instruments
        if instruments is not None:
            attributes = _metric_attributes(semconv.OPERATION_SEND, message, self._server(broker))
            duration = {**attributes, semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_SEND}
            instruments.send_duration.record(time.perf_counter() - self.local.send_start, duration)
            instruments.sent_messages.add(1, attributes)

    def before_process_message(self, broker: Any, message: Any) -> None:
        parent = propagate.extract(message.options)
        creation = trace.get_current_span(parent).get_span_context()
        span = self.tracer.start_span(
            f"process {message.queue_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(semconv.OPERATION_PROCESS, message, broker),
            links=[Link(creation)] if creation.is_valid else None,
        )
        self.local.process_span = span
        self.local.token = otel_context.attach(trace.set_span_in_context(span))
        instruments = self.instruments
        if instruments is not None:
            self.local.process_start = time.perf_counter()
            instruments.in_flight.add(1, {semconv.LABEL_QUEUE_NAME: message.queue_name})
            wait = max(0.0, time.time() - message.message_timestamp / 1000)
            instruments.queue_wait.record(
                wait,
                {semconv.LABEL_TASK_NAME: message.actor_name, semconv.LABEL_QUEUE_NAME: message.queue_name},
            )

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        span = self.local.process_span
        if self.attributes:
            span.set_attribute(semconv.DRAMATIQ_OUTCOME, semconv.OUTCOME_SUCCESS)
        otel_context.detach(self.local.token)
        span.end()
        instruments = self.instruments
        if instruments is not None:
            elapsed = time.perf_counter() - self.local.process_start
            task = {semconv.LABEL_TASK_NAME: message.actor_name}
            attributes = _metric_attributes(semconv.OPERATION_PROCESS, message, self._server(broker))
            instruments.in_flight.add(-1, {semconv.LABEL_QUEUE_NAME: message.queue_name})
            instruments.consumed_messages.add(1, attributes)
            instruments.tasks.add(1, {**task, semconv.LABEL_STATUS: semconv.STATUS_SUCCESS})
            instruments.process_duration.record(elapsed, attributes)
            instruments.task_duration.record(elapsed, task)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Forked workers end with os._exit: without this, the spans (and metrics) still queued would be lost.
        providers = [trace.get_tracer_provider()] + ([get_meter_provider()] if self.instruments else [])
        for provider in providers:
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush()


def _metric_attributes(operation: str, message: Any, server: dict[str, Any]) -> dict[str, Any]:
    return {
        semconv.MESSAGING_SYSTEM: semconv.SYSTEM,
        semconv.MESSAGING_OPERATION_NAME: operation,
        semconv.MESSAGING_DESTINATION_NAME: message.queue_name,
        **server,
    }


def _server(broker: Any) -> dict[str, Any]:
    """``server.address``/``server.port`` of a Redis broker (none for others)."""
    pool = getattr(getattr(broker, "client", None), "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    host, port = kwargs.get("host"), kwargs.get("port")
    if isinstance(host, str) and isinstance(port, int):
        return {semconv.SERVER_ADDRESS: host, semconv.SERVER_PORT: port}
    return {}
