"""The consumer side: a ``process`` span per message, its outcome, metrics and task hooks.

``before_process_message`` extracts the creation context and starts a ``process {queue}`` CONSUMER
span linked to it (and, by default, its child), current while the actor runs;
``after_process_message``/``after_skip_message`` end it with the outcome (as Retries decided it),
record the process metrics, call the failure and completion hooks, and always restore the thread's
previous context.

The three hooks are bound in :class:`~.middleware.OpenTelemetryMiddleware`; they inline their guard
(a decorator would cost a call per hook).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dramatiq import Retry
from dramatiq.common import current_millis
from dramatiq.middleware import Retries
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import Histogram
from opentelemetry.trace import Span, SpanKind

from . import hooks, propagation, semconv
from .common import (
    DUE_OPTION,
    MiddlewareState,
    _call_hook,
    _creation_link,
    _hook_failed,
    _int,
    _no_sdk,
    _set_error,
)
from .hooks import TaskOutcome
from .queue_state.dead_letters import REQUEUES_OPTION

if TYPE_CHECKING:
    from dramatiq import Broker, Message
    from dramatiq.broker import MessageProxy

    from .attributes import _Queue, _Task
    from .exception_signal import ExceptionRecorder
    from .metrics import Instruments


@dataclass(slots=True)
class _Process:
    message_id: str
    span: Span | None
    token: object | None
    start: float
    actor_name: str
    queue: _Queue
    retries: int
    instruments: Instruments | None
    task: _Task | None  # with instruments
    errors: ExceptionRecorder


# The message this worker thread is processing.
_processing: ContextVar[_Process | None] = ContextVar("otel_dramatiq_processing", default=None)


def current_message() -> tuple[str, str]:
    """``(actor name, message id)`` of the message this thread is processing, or ``("", "")``."""
    state = _processing.get()
    return (state.actor_name, state.message_id) if state is not None else ("", "")


def before_process_message(self: MiddlewareState, broker: Broker, message: MessageProxy) -> None:
    span: Span | None = None
    try:
        leftover = _processing.get()
        if leftover is not None:  # never expected; don't let a lost end leak its context
            _end_process(leftover, semconv.OUTCOME_FAILED, None, failed=False)
            _processing.set(None)
        fields = _fields(message)
        actor_name = fields.actor_name
        queue = self._queue(broker, fields.queue_name)
        if queue.excluded or actor_name in self._excluded_actors:
            return
        if not is_instrumentation_enabled() or (self._may_be_noop and _no_sdk()):
            return
        message_id = fields.message_id
        options = fields.options
        retries = _int(options.get("retries"))
        carried = propagation.extract(options)  # the producer's span, baggage and trace state
        if self.options.traces_enabled:
            span = _start_process_span(
                self, broker, message, options, carried, queue, actor_name, message_id, retries
            )
        instruments = self._recording_instruments()
        task = self._task(actor_name, queue) if instruments is not None else None
        state = _Process(
            message_id,
            span,
            None,
            time.perf_counter(),
            actor_name,
            queue,
            retries,
            instruments,
            task,
            self._errors,
        )
        # Attached last, so that nothing can fail between attach and the handover. The actor sees
        # the carried baggage either way, and with traces off the producer's span as its parent.
        if span is not None:
            state.token = otel_context.attach(trace.set_span_in_context(span, carried))
        elif carried is not None:
            state.token = otel_context.attach(carried)
        _processing.set(state)  # from here on, the after-hook ends the span and detaches
        if instruments is not None:
            if instruments.in_flight is not None:
                instruments.in_flight.add(1, queue.label)
            if instruments.queue_wait is not None:
                _record_queue_wait(instruments.queue_wait, state, options, fields.message_timestamp)
        if span is not None and self.options.process_hook is not None:
            _call_hook(self.options.process_hook, span, message)
    except Exception:
        _hook_failed("before_process_message")
    finally:  # progress and the message in hand (with its span), whatever is excluded
        self._registry.before_process_message(broker, message, span)


def _start_process_span(
    self: MiddlewareState,
    broker: Broker,
    message: MessageProxy,
    options: dict[str, Any],
    parent: otel_context.Context | None,
    queue: _Queue,
    actor_name: str,
    message_id: str,
    retries: int,
) -> Span:
    # Linked to the creation context in both modes (messaging-spans.md, "Consumer spans").
    links = _creation_link(parent)
    if self.options.use_links or parent is None:
        parent = otel_context.Context()
    # The sampler sees the sampling-relevant attributes; the others are set only if the span records.
    span = self._tracer.start_span(
        queue.process_span_name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=queue.process_start,
        links=links,
    )
    if span.is_recording():
        attributes: dict[str, Any] = {
            semconv.MESSAGING_MESSAGE_ID: message_id,
            semconv.DRAMATIQ_ACTOR_NAME: actor_name,
            semconv.DRAMATIQ_RETRY_COUNT: retries,
        }
        requeues = _int(options.get(REQUEUES_OPTION))
        if requeues:
            attributes[semconv.DRAMATIQ_REQUEUES] = requeues
        if self.options.capture_args:
            self._capture_args(attributes, message)
        span.set_attributes(attributes)
    return span


def after_process_message(
    self: MiddlewareState,
    broker: Broker,
    message: MessageProxy,
    *,
    result: Any = None,
    exception: BaseException | None = None,
) -> None:
    self._registry.after_process_message(broker, message)
    try:
        state = _take(message)
        if state is None:
            return
        try:
            outcome = _outcome(broker, message, exception)
        except Exception:
            outcome = semconv.OUTCOME_FAILED if exception is not None else semconv.OUTCOME_SUCCESS
        try:
            _call_task_hooks(self, broker, state, outcome, exception)
        finally:  # whatever happens, the span ends and the thread's context is restored
            _end_process(state, outcome, exception, failed=bool(message.failed))
    except Exception:
        _hook_failed("after_process_message")


def after_skip_message(self: MiddlewareState, broker: Broker, message: MessageProxy) -> None:
    self._registry.after_skip_message(broker, message)
    try:
        state = _take(message)
        if state is None:
            return
        try:
            _call_task_hooks(self, broker, state, semconv.OUTCOME_SKIPPED, None)
        finally:
            _end_process(state, semconv.OUTCOME_SKIPPED, None, failed=bool(message.failed))
    except Exception:
        _hook_failed("after_skip_message")


def _take(message: MessageProxy) -> _Process | None:
    state = _processing.get()
    if state is None:
        return None
    _processing.set(None)
    if state.message_id != _fields(message).message_id:  # never expected; end it, don't leak it
        _end_process(state, semconv.OUTCOME_FAILED, None, failed=False)
        return None
    return state


def _call_task_hooks(
    self: MiddlewareState, broker: Broker, state: _Process, outcome: str, exception: BaseException | None
) -> None:
    failure_hooks = self.options.failure_hooks if outcome in _PERMANENT else ()
    if not failure_hooks and not self.options.completion_hooks:
        return
    span_context = state.span.get_span_context() if state.span is not None else None
    task = TaskOutcome(
        actor_name=state.actor_name,
        message_id=state.message_id,
        queue_name=state.queue.name,
        outcome=outcome,
        retries=state.retries,
        duration=time.perf_counter() - state.start,
        exception=exception,
        trace_id=trace.format_trace_id(span_context.trace_id) if span_context else None,
    )
    token = _processing.set(state)  # hooks log as part of the message (see logs.py)
    try:
        if hooks.call_failure_hooks(broker, task, failure_hooks) and state.span is not None:
            state.span.add_event("dramatiq.permanent_failure", {"hooks": len(failure_hooks)})
        hooks.call_hooks(task, self.options.completion_hooks)
    finally:
        _processing.reset(token)


def _record_queue_wait(
    histogram: Histogram, state: _Process, options: dict[str, Any], timestamp: Any
) -> None:
    assert state.task is not None
    due = options.get(DUE_OPTION, timestamp)
    if isinstance(due, int | float) and not isinstance(due, bool):
        histogram.record(max(0.0, (current_millis() - due) / 1000), state.task.with_queue)


def _end_process(state: _Process, outcome: str, exception: BaseException | None, *, failed: bool) -> None:
    try:
        # A failure: the attempt raised, and neither `throws` (handled) nor `Retry` (asked for) says
        # Dramatiq expected it. Handled exceptions are recorded nowhere (recording-errors.md).
        is_error = exception is not None and outcome in (semconv.OUTCOME_RETRY, semconv.OUTCOME_FAILED)
        if isinstance(exception, Retry) and outcome == semconv.OUTCOME_RETRY:
            is_error = False
        if is_error:
            assert exception is not None
            state.errors.record(state.span, exception, semconv.EVENT_PROCESS_EXCEPTION)
        if state.span is not None:
            if state.span.is_recording():  # an unsampled span records nothing, but is still ended
                state.span.set_attribute(semconv.DRAMATIQ_OUTCOME, outcome)
                if is_error:
                    assert exception is not None
                    _set_error(state.span, exception)
            state.span.end()
        if state.instruments is not None:
            _record_process_metrics(state, outcome, exception if is_error else None, failed=failed)
    finally:
        if state.token is not None:
            otel_context.detach(state.token)  # type: ignore[arg-type]


_PERMANENT = frozenset({semconv.OUTCOME_FAILED, semconv.OUTCOME_HANDLED})


def _record_process_metrics(
    state: _Process, outcome: str, error: BaseException | None, *, failed: bool
) -> None:
    instruments, task = state.instruments, state.task
    assert instruments is not None and task is not None
    elapsed = time.perf_counter() - state.start
    if instruments.consumed_messages is not None:  # the semantic-convention family
        # A delivery is counted whatever the actor did: consumed.messages counts deliveries, and the
        # delivery itself did not fail. The process operation did: its duration carries error.type.
        attributes = state.queue.process_attributes
        instruments.consumed_messages.add(1, attributes)
        if instruments.process_duration is not None:  # every process operation, skipped ones too
            if error is not None:
                attributes = {**attributes, semconv.ERROR_TYPE: semconv.error_type(error)}
            instruments.process_duration.record(elapsed, attributes)
    if instruments.tasks is not None:  # the guide's family
        instruments.tasks.add(1, task.by_status[outcome])
        if outcome != semconv.OUTCOME_SKIPPED and instruments.task_duration is not None:
            instruments.task_duration.record(elapsed, task.label)
    if instruments.in_flight is not None:  # the guide-style extras
        instruments.in_flight.add(-1, state.queue.label)
        if outcome == semconv.OUTCOME_RETRY and instruments.retries is not None:
            instruments.retries.add(1, task.label)
        if failed and instruments.dead_lettered is not None:
            instruments.dead_lettered.add(1, task.with_queue)


def _fields(message: MessageProxy) -> Message[Any]:
    """The message a ``MessageProxy`` wraps, to read its fields directly.

    The proxy forwards every attribute read through a Python ``__getattr__`` (about 0.45 µs each, five
    or six per message); its ``_message`` has been the wrapped message since Dramatiq 1.0. Falls back to
    the proxy itself.
    """
    return cast("Message[Any]", getattr(message, "_message", message))


def _outcome(broker: Broker, message: MessageProxy, exception: BaseException | None) -> str:
    """What became of this attempt, as Retries (whose after-hook ran before ours) decided it."""
    if exception is None:
        return semconv.OUTCOME_SUCCESS
    throws = message.options.get("throws")
    if not throws:
        try:
            throws = broker.get_actor(message.actor_name).options.get("throws")
        except Exception:
            throws = None
    if throws and _isinstance(exception, throws):
        return semconv.OUTCOME_HANDLED
    if message.failed:
        return semconv.OUTCOME_FAILED
    if any(isinstance(middleware, Retries) for middleware in broker.middleware):
        return semconv.OUTCOME_RETRY
    return semconv.OUTCOME_FAILED  # nobody will retry it: this was the only attempt


def _isinstance(exception: BaseException, classes: Any) -> bool:
    try:
        return isinstance(exception, classes)
    except TypeError:  # a `throws` option that is not a class or tuple of classes
        return False
