"""The producer side: a ``send`` span per message enqueued, its context injected into the message.

``before_enqueue`` starts a ``send {queue}`` PRODUCER span and injects its context into
``message.options`` (the message's creation context); ``after_enqueue`` ends it; if the broker raises,
the instrumentor's enqueue wrapper ends it with ERROR (see :func:`abandon_sends`). A message that
already carries a creation context (a retry, a delayed message coming due) keeps it: a retry gets a
``send`` span of kind CLIENT, child of the failed attempt and linked to the creation context (the
conventions' "Send span (client)"), and a delayed message moved by the worker gets none.

``before_enqueue`` and ``after_enqueue`` are bound in :class:`~.middleware.OpenTelemetryMiddleware`;
they inline their guard (a decorator would cost a call per hook).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dramatiq.common import current_millis
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind

from . import propagation, quiet, semconv
from .common import (
    DUE_OPTION,
    MiddlewareState,
    _call_hook,
    _creation_link,
    _hook_failed,
    _int,
    _logger,
    _no_sdk,
    _set_error,
)

if TYPE_CHECKING:
    from dramatiq import Broker, Message

    from .attributes import _Queue
    from .exception_signal import ExceptionRecorder
    from .metrics import Instruments


@dataclass(slots=True)
class _Send:
    message: Message[Any]
    span: Span | None
    start: float
    queue: _Queue
    instruments: Instruments | None
    errors: ExceptionRecorder
    token: object | None = None  # the broker call's context (quiet.broker_call_context), detached at the end


class _ThreadSends(threading.local):
    """Sends in progress on this thread, innermost last (a before-hook may enqueue another message).

    Thread-local rather than a ContextVar: ``before_enqueue`` and ``after_enqueue`` run inside one
    synchronous ``Broker.enqueue`` call, so no other task can run on the thread in between.
    """

    def __init__(self) -> None:
        self.stack: list[_Send] = []
        # Enqueues in progress inside the instrumentor's wrapper, which ends the sends a raising broker
        # leaves (see guarded_enqueue); only there is a send's context attached around the broker call.
        self.guarded = 0


_sends = _ThreadSends()


def before_enqueue(self: MiddlewareState, broker: Broker, message: Message[Any], delay: int | None) -> None:
    try:
        stack = _sends.stack
        if stack and stack[-1].message is message:
            return  # the broker is retrying the publish of the same message (RabbitMQ reconnect)
        queue = self._queue(broker, message.queue_name)
        if queue.excluded or message.actor_name in self._excluded_actors:
            return
        if not is_instrumentation_enabled():
            return
        options = message.options
        if self._may_be_noop and _no_sdk():  # only the API is installed: just pass context on
            if trace.get_current_span().get_span_context().is_valid and not propagation.carries_context(
                options
            ):
                propagation.inject(options, otel_context.get_current())
            return
        if delay is not None:
            options[DUE_OPTION] = options.get("eta", current_millis() + delay)
        reenqueue = propagation.carries_context(options)
        # A delayed message coming due, moved by the worker: not a send by anybody. Told by its
        # creation context, or (traces off: none was injected) by the due time we stored.
        moved = reenqueue or (delay is None and DUE_OPTION in options)
        if moved and not trace.get_current_span().get_span_context().is_valid:
            return
        span = span_context = None
        if self.options.traces_enabled:
            span, span_context = _start_send_span(self, broker, message, queue, delay, reenqueue)
        elif not reenqueue:
            propagation.inject(options, otel_context.get_current())
        instruments = self._recording_instruments()
        send = _Send(message, span, time.perf_counter(), queue, instruments, self._errors)
        stack.append(send)
        if span_context is not None and _sends.guarded:  # attached last: _end_send detaches it
            send.token = otel_context.attach(
                quiet.broker_call_context(broker, span_context, self.options.suppress_broker_spans)
            )
    except Exception:
        _hook_failed("before_enqueue")


def _start_send_span(
    self: MiddlewareState,
    broker: Broker,
    message: Message[Any],
    queue: _Queue,
    delay: int | None,
    reenqueue: bool,
) -> tuple[Span, otel_context.Context]:
    """The send span, and the current context with it (built once: injected on a first send, current
    during the broker call)."""
    options = message.options
    # Only the first send creates the creation context (PRODUCER); a re-send is a CLIENT span
    # linked to it. The sampler sees the sampling-relevant attributes and the link; the other
    # attributes are set only if the span records.
    links = _creation_link(propagation.extract(options)) if reenqueue else None
    span = self._tracer.start_span(
        queue.send_span_name,
        kind=SpanKind.CLIENT if reenqueue else SpanKind.PRODUCER,
        attributes=queue.send_start,
        links=links,
    )
    if span.is_recording():
        attributes: dict[str, Any] = {
            semconv.MESSAGING_MESSAGE_ID: message.message_id,
            semconv.DRAMATIQ_ACTOR_NAME: message.actor_name,
        }
        if delay is not None:
            attributes[semconv.DRAMATIQ_DELAY] = delay
            attributes[semconv.DRAMATIQ_ETA] = options[DUE_OPTION]
        if reenqueue:
            attributes[semconv.DRAMATIQ_REENQUEUE] = True
            attributes[semconv.DRAMATIQ_RETRY_COUNT] = _int(options.get("retries"))
        client_id = self._registry.worker_id()  # sent from a worker thread: that worker
        if client_id is not None:
            attributes[semconv.MESSAGING_CLIENT_ID] = client_id
        if self.options.capture_args:
            self._capture_args(attributes, message)
        span.set_attributes(attributes)
    span_context = trace.set_span_in_context(span)
    if not reenqueue:
        propagation.inject(options, span_context)
    if self.options.publish_hook is not None:
        _call_hook(self.options.publish_hook, span, message)
    return span, span_context


def after_enqueue(self: MiddlewareState, broker: Broker, message: Message[Any], delay: int | None) -> None:
    try:
        stack = _sends.stack
        if not stack:
            return
        if stack[-1].message is message:  # the usual case: the innermost send
            _end_send(stack.pop(), None)
            return
        for index in range(len(stack) - 2, -1, -1):
            if stack[index].message is message:
                _end_send(stack.pop(index), None)
                return
    except Exception:
        _hook_failed("after_enqueue")


def abandon_sends(mark: int, exception: BaseException) -> None:
    """End, with ``exception``, the sends started on this thread after the first ``mark`` ones.

    Called by :func:`guarded_enqueue` when the broker raises, since Dramatiq then never emits
    ``after_enqueue``.
    """
    try:
        stack = _sends.stack
        abandoned = stack[mark:]
        del stack[mark:]
        for send in reversed(abandoned):
            _end_send(send, exception)
    except Exception:
        _logger.debug("OpenTelemetry abandon_sends failed", exc_info=True)


def guarded_enqueue(
    enqueue: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A ``wrapt`` wrapper of a broker's ``enqueue``: if it raises, end the sends it started (Dramatiq
    then emits no ``after_enqueue``) and detach their contexts. The instrumentor wraps every
    ``enqueue`` with it (directly, so that it costs one call per message)."""
    state = _sends
    mark = len(state.stack)
    state.guarded += 1
    try:
        return enqueue(*args, **kwargs)
    except BaseException as exception:
        abandon_sends(mark, exception)
        raise
    finally:
        state.guarded -= 1


def _end_send(send: _Send, exception: BaseException | None) -> None:
    if send.token is not None:
        otel_context.detach(send.token)  # type: ignore[arg-type]
    if exception is not None:
        send.errors.record(send.span, exception, semconv.EVENT_SEND_EXCEPTION)
    if send.span is not None:
        if exception is not None:
            _set_error(send.span, exception)
        send.span.end()
    instruments = send.instruments
    if instruments is not None and instruments.sent_messages is not None:
        sent, duration = send.queue.send_attributes, send.queue.send_start
        if exception is not None:
            error = {semconv.ERROR_TYPE: semconv.error_type(exception)}
            sent, duration = {**sent, **error}, {**duration, **error}
        if instruments.send_duration is not None:
            instruments.send_duration.record(time.perf_counter() - send.start, duration)
        instruments.sent_messages.add(1, sent)
