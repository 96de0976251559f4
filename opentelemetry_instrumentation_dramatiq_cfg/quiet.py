"""Quiet broker: Dramatiq's own broker traffic runs with instrumentation suppressed.

With ``opentelemetry-instrumentation-redis`` (or ``-pika``) installed, every command Dramatiq sends
to its broker for itself becomes a span; outside a message, each one is a trace of its own: the
consumer's fetch at every poll, the acks, the heartbeats, our worker registry and queue gauges.
:class:`BrokerTraffic` wraps (``wrapt``) exactly those calls in OpenTelemetry's
``suppress_instrumentation()``. Each wrapper attaches the suppression and detaches it before it
returns, on the thread that called it, so it never reaches actor code, another thread or the next
message:

* the consumer of every broker but the StubBroker (found through ``Broker.consume``): creating it,
  ``__next__`` (Redis: the ``fetch`` script, which also beats Dramatiq's heartbeat and requeues dead
  workers' messages; RabbitMQ: the channel's ``consume`` generator), ``ack``, ``nack``, ``requeue``,
  ``close``;
* the consumer thread's ``handle_delayed_messages`` (delayed messages coming due, moved from
  ``X.DQ`` back to ``X``: not a send by anybody, so the middleware gives them no span either);
* this package's worker registry (boot, beats thread, shutdown) and queue-gauge reads.

Send side (see :func:`broker_call_context`): the enqueue's broker call runs in the ``send`` span's
context, so a Redis command span is its child; on RabbitMQ it also runs suppressed, so the pika
instrumentation adds no second PRODUCER span and no ``traceparent`` header of its own.

``opentelemetry-instrumentation-pika`` logs an ERROR with a traceback for every message consumed
through ``BlockingChannel.consume`` while instrumentation is suppressed (its deque proxy calls
``end()`` on the ``None`` span it gets); the proxy's ``popleft`` is therefore bypassed while
suppressed (see ``tests/repros/pika_suppressed_consume.py``).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation, unwrap

_logger = logging.getLogger(__name__)

#: The consumer methods that talk to the broker (those a consumer class defines are wrapped).
CONSUMER_METHODS = ("__next__", "ack", "nack", "requeue", "close")


def suppressed(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """A ``wrapt`` wrapper: call ``wrapped`` with instrumentation suppressed on this thread."""
    with suppress_instrumentation():
        return wrapped(*args, **kwargs)


def broker_call_context(
    broker: Any, span_context: otel_context.Context, suppress: bool
) -> otel_context.Context:
    """The context the broker call of a send runs in: ``span_context`` (the current context with the
    send span in it), suppressed on RabbitMQ.

    A Redis command span is kept as the send span's child (it shows the round trip); a messaging
    client's span for the same message (pika's ``{queue} send`` PRODUCER) would be a second
    producer span, so with ``suppress`` it is not emitted.
    """
    if suppress and _is_rabbitmq(broker):  # a RabbitMQ publish costs far more than this
        with suppress_instrumentation():  # its key, set in a copy of the current context, then the span
            return trace.set_span_in_context(trace.get_current_span(span_context), otel_context.get_current())
    return span_context


def _is_rabbitmq(broker: Any) -> bool:
    module = sys.modules.get("dramatiq.brokers.rabbitmq")
    return module is not None and isinstance(broker, module.RabbitmqBroker)


def _owner(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name`` (None: only ``object`` or nobody does)."""
    return next((c for c in cls.__mro__ if name in vars(c) and c is not object), None)


class BrokerTraffic:
    """Installs and removes the suppression wrappers (one instance per instrumentor)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wrapped: list[tuple[Any, str]] = []

    def install(self) -> None:
        """Wrap the broker-independent paths: delayed-message moves, registry, gauges, pika's proxy."""
        from .metrics import QueueGauges
        from .queue_state.registry import WorkerRegistry

        worker = importlib.import_module("dramatiq.worker")
        consumer_thread = getattr(worker, "ConsumerThread", None) or getattr(worker, "_ConsumerThread", None)
        if consumer_thread is not None:
            self._wrap(consumer_thread, "handle_delayed_messages", suppressed)
        for name in ("worker_started", "worker_stopped", "_beat"):
            self._wrap(WorkerRegistry, name, suppressed)
        self._wrap(QueueGauges, "_read", suppressed)
        try:
            pika_utils = importlib.import_module("opentelemetry.instrumentation.pika.utils")
            proxy = pika_utils.ReadyMessagesDequeProxy
        except (ImportError, AttributeError):  # pika or its instrumentation not installed
            return
        self._wrap(proxy, "popleft", _popleft_unless_suppressed)

    def watch(self, broker: Any) -> None:
        """Wrap ``consume`` of ``broker``'s class: its consumers' broker calls are then suppressed."""
        if _is_stub(broker):
            return  # in memory: nothing to suppress, nothing to pay per message
        owner = _owner(type(broker), "consume")
        if owner is not None:
            self._wrap(owner, "consume", self._consume)

    def uninstall(self) -> None:
        with self._lock:
            wrapped, self._wrapped = self._wrapped, []
        for owner, name in reversed(wrapped):
            try:
                unwrap(owner, name)
            except Exception:
                _logger.debug("Could not unwrap %r.%s", owner, name, exc_info=True)

    def _consume(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with suppress_instrumentation():  # RabbitMQ declares the queue here
            consumer = wrapped(*args, **kwargs)
        for name in CONSUMER_METHODS:
            owner = _owner(type(consumer), name)
            if owner is not None:
                self._wrap(owner, name, suppressed)
        return consumer

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        """Wrap ``owner.name`` once; never raises (a missing attribute is logged and skipped)."""
        with self._lock:
            if (owner, name) in self._wrapped:
                return
            try:
                wrapt.wrap_function_wrapper(owner, name, wrapper)
            except Exception:
                _logger.debug("Quiet broker: cannot wrap %r.%s", owner, name, exc_info=True)
                return
            self._wrapped.append((owner, name))


def _popleft_unless_suppressed(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if is_instrumentation_enabled():
        return wrapped(*args, **kwargs)
    return instance.__wrapped__.popleft(*args, **kwargs)


def _is_stub(broker: Any) -> bool:
    module = sys.modules.get("dramatiq.brokers.stub")
    return module is not None and isinstance(broker, module.StubBroker)
