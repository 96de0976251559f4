"""The Dramatiq middleware that turns broker and worker hooks into spans and metrics.

:class:`OpenTelemetryMiddleware` is what ``DramatiqInstrumentor`` adds to every broker. It can also
be listed by dotted path in a broker's middleware list (django_dramatiq's
``DRAMATIQ_BROKER["MIDDLEWARE"]``); put it first so its process span encloses the other middleware
and it sees what Retries decided.

Producer side: ``before_enqueue`` starts a ``send {queue}`` PRODUCER span and injects its context into
``message.options``; ``after_enqueue`` ends it; if the broker raises, the instrumentor's enqueue
wrapper ends it with ERROR (see :func:`abandon_sends`). A message that already carries a creation
context (a retry, a delayed message coming due) keeps it: a retry gets a send span of its own, child
of the failed attempt, and a delayed message moved by the worker gets none.

Consumer side: ``before_process_message`` extracts the context and starts a ``process {queue}``
CONSUMER span, current while the actor runs; ``after_process_message``/``after_skip_message`` end it
with the outcome and always restore the thread's previous context.
"""

from __future__ import annotations

import logging
import os
import reprlib
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from dramatiq import Middleware, Retry
from dramatiq.common import current_millis, q_name
from dramatiq.middleware import Retries
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER, OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import Histogram, get_meter_provider
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from . import hooks, processes, propagation, semconv, shutdown
from .config import AnyMessage, Hook, Options
from .hooks import TaskOutcome
from .metrics import Instruments, instruments_for, queue_gauges_for, reader_probe
from .queue_state.registry import WorkerRegistryMiddleware
from .version import __version__

if TYPE_CHECKING:
    from dramatiq import Broker, Message
    from dramatiq.broker import MessageProxy
    from dramatiq.worker import Worker

try:  # the API's stand-in until an SDK sets a meter provider (no public name for its class)
    from opentelemetry.metrics import _internal as _metrics_api
    from opentelemetry.metrics._internal import _ProxyMeterProvider
except ImportError:  # pragma: no cover - then the fast path is simply never taken
    _metrics_api = None  # type: ignore[assignment]
    _ProxyMeterProvider = None  # type: ignore[assignment,misc]

_logger = logging.getLogger(__name__)

#: Option key holding the time (epoch ms) a delayed message became due, kept across the move
#: from the delay queue (which deletes Dramatiq's own ``eta``), for the queue-wait histogram.
DUE_OPTION = "otel_due_ms"

#: Seconds a queue-gauge read of the broker may take before it is given up.
READ_TIMEOUT = 2.0


#: Queues whose names and attribute sets are kept (see ``OpenTelemetryMiddleware._queue``).
MAX_CACHED_QUEUES = 1024


@dataclass(frozen=True, slots=True)
class _Queue:
    """What the hooks derive from a broker's queue name, built once per queue instead of per message.

    The dicts are shared by every message of the queue: they are passed to the SDK, never mutated.
    """

    name: str  # without Dramatiq's delay-queue suffix
    excluded: bool
    send_span_name: str
    process_span_name: str
    send_attributes: dict[str, Any]  # of the semantic-convention metrics
    process_attributes: dict[str, Any]
    # The span attributes a sampler may read: given at span start, the others only if it records.
    send_start: dict[str, Any]
    process_start: dict[str, Any]
    label: dict[str, Any]  # the guide's ``queue_name`` label

    @classmethod
    def build(cls, queue_name: str, excluded_queues: frozenset[str], server: dict[str, Any]) -> _Queue:
        name = q_name(queue_name)
        send_attributes = _metric_attributes(semconv.OPERATION_SEND, name)
        process_attributes = _metric_attributes(semconv.OPERATION_PROCESS, name)
        return cls(
            name=name,
            excluded=name in excluded_queues,
            send_span_name=semconv.span_name(semconv.OPERATION_SEND, name),
            process_span_name=semconv.span_name(semconv.OPERATION_PROCESS, name),
            send_attributes=send_attributes,
            process_attributes=process_attributes,
            send_start={
                **send_attributes,
                semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_SEND,
                **server,
            },
            process_start={
                **process_attributes,
                semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_PROCESS,
                **server,
            },
            label={semconv.LABEL_QUEUE_NAME: name},
        )


@dataclass(frozen=True, slots=True)
class _Task:
    """The metric attribute sets of one actor on one queue, built once instead of per message."""

    label: dict[str, Any]  # ``task_name``
    by_status: dict[str, dict[str, Any]]  # ``task_name``, ``status`` for each outcome
    with_queue: dict[str, Any]  # ``task_name``, ``queue_name``

    @classmethod
    def build(cls, actor_name: str, queue_name: str) -> _Task:
        label = {semconv.LABEL_TASK_NAME: actor_name}
        return cls(
            label=label,
            by_status={
                outcome: {**label, semconv.LABEL_STATUS: status} for outcome, status in _STATUS.items()
            },
            with_queue={**label, semconv.LABEL_QUEUE_NAME: queue_name},
        )


@dataclass(slots=True)
class _Send:
    message: Message[Any]
    span: Span | None
    start: float
    attributes: dict[str, Any]
    instruments: Instruments | None


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


class _ThreadSends(threading.local):
    """Sends in progress on this thread, innermost last (a before-hook may enqueue another message).

    Thread-local rather than a ContextVar: ``before_enqueue`` and ``after_enqueue`` run inside one
    synchronous ``Broker.enqueue`` call, so no other task can run on the thread in between.
    """

    def __init__(self) -> None:
        self.stack: list[_Send] = []


_sends = _ThreadSends()
# The message this worker thread is processing.
_processing: ContextVar[_Process | None] = ContextVar("otel_dramatiq_processing", default=None)


def _hook_failed(name: str) -> None:
    """Telemetry must never raise into Dramatiq: log at debug level and carry on."""
    _logger.debug("OpenTelemetry %s failed", name, exc_info=True)


def _guarded(hook: Callable[..., None]) -> Callable[..., None]:
    """Run ``hook`` under :func:`_hook_failed` (the per-message hooks inline the same try/except)."""

    def guarded(self: OpenTelemetryMiddleware, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception:
            _hook_failed(hook.__name__)

    guarded.__name__ = hook.__name__
    guarded.__doc__ = hook.__doc__
    return guarded


class OpenTelemetryMiddleware(Middleware):  # type: ignore[misc]
    """Emit OpenTelemetry spans and metrics for every message sent and processed.

    Parameters:
      The keyword arguments of :class:`~opentelemetry_instrumentation_dramatiq_cfg.config.Options`
      (``tracer_provider``, ``meter_provider``, ``excluded_actors``, ``excluded_queues``,
      ``use_links``, ``publish_hook``, ``process_hook``, ``capture_args``,
      ``capture_args_max_length``, ``traces_enabled``, ``metrics_enabled``, ``metrics_set``, ...);
      any left out is read from its ``OTEL_PYTHON_DRAMATIQ_*`` environment variable, so the class
      can be built with no arguments from a dotted path.
    """

    def __init__(self, **options: Any) -> None:
        self._registry = WorkerRegistryMiddleware()
        self.configure(**options)

    def configure(self, **options: Any) -> None:
        """Replace the options (used by the instrumentor on a middleware listed by dotted path)."""
        self.options = Options.resolve(**options)
        self._tracer = trace.get_tracer(
            __name__,
            __version__,
            self.options.tracer_provider,
            schema_url="https://opentelemetry.io/schemas/1.27.0",
        )
        self._instruments = (
            instruments_for(self.options.meter_provider, self.options.metrics_set)
            if self.options.metrics_enabled
            else None
        )
        # Nothing is recorded while the SDK's meter provider has no reader (OTEL_METRICS_EXPORTER=none).
        self._has_reader = (
            reader_probe(self.options.meter_provider) if self._instruments is not None else None
        )
        self._repr = reprlib.Repr()
        self._repr.maxstring = self._repr.maxother = self.options.capture_args_max_length
        self._server_attributes: dict[int, dict[str, Any]] = {}
        self._queues: dict[tuple[int, str], _Queue] = {}
        self._tasks: dict[tuple[str, str], _Task] = {}
        self._excluded_actors = self.options.excluded_actors
        # With global providers and no task hooks, nothing is recorded until an SDK is installed:
        # the hooks then take a fast path (checked per message, so a later SDK is picked up).
        self._may_be_noop = (
            self.options.tracer_provider is None
            and self.options.meter_provider is None
            and not self.options.failure_hooks
            and not self.options.completion_hooks
        )
        self._queue_gauges = (
            queue_gauges_for(
                self.options.meter_provider,
                self.options.queue_metrics_interval,
                READ_TIMEOUT,
                self.options.stall_timeout,
            )
            if self.options.metrics_enabled and self.options.queue_metrics_enabled
            else None
        )

    def _recording_instruments(self) -> Instruments | None:
        """The instruments a message records (decided once per message, so that both its hooks agree)."""
        if self._has_reader is not None and not self._has_reader():
            return None
        return self._instruments

    def watch_queues(self, broker: Broker) -> None:
        """Report the queue-state gauges of ``broker`` (done on its first declared queue anyway)."""
        if self._queue_gauges is not None:
            self._queue_gauges.watch(broker)

    @_guarded
    def after_declare_queue(self, broker: Broker, queue_name: str) -> None:
        self.watch_queues(broker)

    # -- producer -------------------------------------------------------------------------------
    # The four per-message hooks inline their guard (a decorator would cost a call per hook).

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
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
            if reenqueue and not trace.get_current_span().get_span_context().is_valid:
                return  # a delayed message coming due, moved by the worker: not a send by anybody
            span = None
            if self.options.traces_enabled:
                span = self._start_send_span(broker, message, queue, delay, reenqueue)
            elif not reenqueue:
                propagation.inject(options, otel_context.get_current())
            instruments = self._recording_instruments()
            stack.append(_Send(message, span, time.perf_counter(), queue.send_attributes, instruments))
        except Exception:
            _hook_failed("before_enqueue")

    def _start_send_span(
        self, broker: Broker, message: Message[Any], queue: _Queue, delay: int | None, reenqueue: bool
    ) -> Span:
        options = message.options
        # The sampler sees the sampling-relevant attributes; the others are set only if the span records.
        span = self._tracer.start_span(
            queue.send_span_name, kind=SpanKind.PRODUCER, attributes=queue.send_start
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
            if self.options.capture_args:
                self._capture_args(attributes, message)
            span.set_attributes(attributes)
        if not reenqueue:
            propagation.inject(options, trace.set_span_in_context(span))
        if self.options.publish_hook is not None:
            self._call_hook(self.options.publish_hook, span, message)
        return span

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
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

    # -- consumer -------------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._registry.before_process_message(broker, message)  # progress, whatever is excluded
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
            span = None
            if self.options.traces_enabled:
                span = self._start_process_span(
                    broker, message, options, queue, actor_name, message_id, retries
                )
            instruments = self._recording_instruments()
            task = self._task(actor_name, queue) if instruments is not None else None
            state = _Process(
                message_id, span, None, time.perf_counter(), actor_name, queue, retries, instruments, task
            )
            if span is not None:  # attached last, so that nothing can fail between attach and the handover
                state.token = otel_context.attach(trace.set_span_in_context(span))
            _processing.set(state)  # from here on, the after-hook ends the span and detaches
            if instruments is not None:
                if instruments.in_flight is not None:
                    instruments.in_flight.add(1, queue.label)
                if instruments.queue_wait is not None:
                    self._record_queue_wait(instruments.queue_wait, state, options, fields.message_timestamp)
            if span is not None and self.options.process_hook is not None:
                self._call_hook(self.options.process_hook, span, message)
        except Exception:
            _hook_failed("before_process_message")

    def _start_process_span(
        self,
        broker: Broker,
        message: MessageProxy,
        options: dict[str, Any],
        queue: _Queue,
        actor_name: str,
        message_id: str,
        retries: int,
    ) -> Span:
        parent = propagation.extract(options)
        links = None
        if self.options.use_links:
            linked = trace.get_current_span(parent).get_span_context() if parent else None
            links = [Link(linked)] if linked is not None and linked.is_valid else None
            parent = otel_context.Context()
        elif parent is None:
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
            if self.options.capture_args:
                self._capture_args(attributes, message)
            span.set_attributes(attributes)
        return span

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._registry.after_process_message(broker, message)
        try:
            state = self._take(message)
            if state is None:
                return
            try:
                outcome = _outcome(broker, message, exception)
            except Exception:
                outcome = semconv.OUTCOME_FAILED if exception is not None else semconv.OUTCOME_SUCCESS
            try:
                self._call_task_hooks(broker, state, outcome, exception)
            finally:  # whatever happens, the span ends and the thread's context is restored
                _end_process(state, outcome, exception, failed=bool(message.failed))
        except Exception:
            _hook_failed("after_process_message")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._registry.after_skip_message(broker, message)
        try:
            state = self._take(message)
            if state is None:
                return
            try:
                self._call_task_hooks(broker, state, semconv.OUTCOME_SKIPPED, None)
            finally:
                _end_process(state, semconv.OUTCOME_SKIPPED, None, failed=bool(message.failed))
        except Exception:
            _hook_failed("after_skip_message")

    # -- worker lifecycle -----------------------------------------------------------------------

    @_guarded
    def after_process_boot(self, broker: Broker) -> None:
        """Emitted in the worker processes of the ``dramatiq`` command only (see :mod:`.processes`).
        Telemetry is flushed on the first SIGTERM too (see :mod:`.shutdown`)."""
        processes.mark_worker_process()
        processes.warn_about_standard_prometheus()
        shutdown.flush_on_first_signal(self._flush)

    @_guarded
    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._registry.before_worker_boot(broker, worker)

    @_guarded
    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Register the worker (see :mod:`.queue_state.registry`) for the health view."""
        self._registry.after_worker_boot(broker, worker)

    @_guarded
    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._registry.before_worker_shutdown(broker, worker)

    @_guarded
    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        """Flush buffered hooks, spans and, in the command's worker processes, metrics.

        Forked worker processes end with ``os._exit``: the SDK's atexit shutdown never runs there.
        Metrics are flushed only there: elsewhere atexit does it, and a flush would make the OTel
        Prometheus exporter repeat every series on its next scrape.
        """
        self._flush()

    def _flush(self) -> None:
        hooks.flush_all()
        providers: list[Any] = [self.options.tracer_provider or trace.get_tracer_provider()]
        if processes.is_worker_process():
            providers.append(self.options.meter_provider or get_meter_provider())
        for provider in providers:
            flush = getattr(provider, "force_flush", None)
            if callable(flush):
                flush()

    # -- helpers --------------------------------------------------------------------------------

    def _call_task_hooks(
        self, broker: Broker, state: _Process, outcome: str, exception: BaseException | None
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

    def _queue(self, broker: Broker, queue_name: str) -> _Queue:
        """The cached :class:`_Queue` of ``queue_name`` (built uncached past MAX_CACHED_QUEUES)."""
        key = (id(broker), queue_name)
        queue = self._queues.get(key)
        if queue is None:
            queue = _Queue.build(queue_name, self.options.excluded_queues, self._server(broker))
            if len(self._queues) < MAX_CACHED_QUEUES:
                self._queues[key] = queue
        return queue

    def _task(self, actor_name: str, queue: _Queue) -> _Task:
        """The cached :class:`_Task` of an actor on a queue (built uncached past MAX_CACHED_QUEUES)."""
        key = (actor_name, queue.name)
        task = self._tasks.get(key)
        if task is None:
            task = _Task.build(actor_name, queue.name)
            if len(self._tasks) < MAX_CACHED_QUEUES:
                self._tasks[key] = task
        return task

    def _take(self, message: MessageProxy) -> _Process | None:
        state = _processing.get()
        if state is None:
            return None
        _processing.set(None)
        if state.message_id != _fields(message).message_id:  # never expected; end it, don't leak it
            _end_process(state, semconv.OUTCOME_FAILED, None, failed=False)
            return None
        return state

    def _server(self, broker: Broker) -> dict[str, Any]:
        cached = self._server_attributes.get(id(broker))
        if cached is None:
            cached = self._server_attributes[id(broker)] = _server_attributes(broker)
        return cached

    def _capture_args(self, attributes: dict[str, Any], message: AnyMessage) -> None:
        if self.options.capture_args:
            attributes[semconv.DRAMATIQ_ARGS] = self._safe_repr(message.args)
            attributes[semconv.DRAMATIQ_KWARGS] = self._safe_repr(message.kwargs)

    def _safe_repr(self, value: Any) -> str:
        limit = self.options.capture_args_max_length
        try:
            text = self._repr.repr(value)
        except Exception:
            return "<unrepresentable>"
        return text if len(text) <= limit else text[: limit - 3] + "..."

    @staticmethod
    def _record_queue_wait(
        histogram: Histogram, state: _Process, options: dict[str, Any], timestamp: Any
    ) -> None:
        assert state.task is not None
        due = options.get(DUE_OPTION, timestamp)
        if isinstance(due, int | float) and not isinstance(due, bool):
            histogram.record(max(0.0, (current_millis() - due) / 1000), state.task.with_queue)

    @staticmethod
    def _call_hook(hook: Hook | None, span: Span, message: AnyMessage) -> None:
        if hook is None:
            return
        try:
            hook(span, message)
        except Exception:
            _logger.warning("Dramatiq OpenTelemetry hook %r failed", hook, exc_info=True)


def current_message() -> tuple[str, str]:
    """``(actor name, message id)`` of the message this thread is processing, or ``("", "")``."""
    state = _processing.get()
    return (state.actor_name, state.message_id) if state is not None else ("", "")


def abandon_sends(mark: int, exception: BaseException) -> None:
    """End, with ``exception``, the sends started on this thread after ``mark`` (see :func:`sends_mark`).

    Called by the instrumentor's wrapper around ``Broker.enqueue`` when the broker raises, since
    Dramatiq then never emits ``after_enqueue``.
    """
    try:
        stack = _sends.stack
        abandoned = stack[mark:]
        del stack[mark:]
        for send in reversed(abandoned):
            _end_send(send, exception)
    except Exception:
        _logger.debug("OpenTelemetry abandon_sends failed", exc_info=True)


def sends_mark() -> int:
    """How many sends are in progress on this thread."""
    return len(_sends.stack)


def _end_send(send: _Send, exception: BaseException | None) -> None:
    if send.span is not None:
        if exception is not None:
            _record_error(send.span, exception)
        send.span.end()
    instruments = send.instruments
    if instruments is not None and instruments.sent_messages is not None:
        attributes = send.attributes
        if exception is not None:
            attributes = {**attributes, semconv.ERROR_TYPE: _error_type(exception)}
        if instruments.send_duration is not None:
            instruments.send_duration.record(time.perf_counter() - send.start, attributes)
        instruments.sent_messages.add(1, attributes)


def _end_process(state: _Process, outcome: str, exception: BaseException | None, *, failed: bool) -> None:
    try:
        is_error = exception is not None and outcome in (semconv.OUTCOME_RETRY, semconv.OUTCOME_FAILED)
        if isinstance(exception, Retry) and outcome == semconv.OUTCOME_RETRY:
            is_error = False
        if state.span is not None:
            if state.span.is_recording():  # an unsampled span records nothing, but is still ended
                state.span.set_attribute(semconv.DRAMATIQ_OUTCOME, outcome)
                if is_error:
                    assert exception is not None
                    _record_error(state.span, exception)
                elif exception is not None:
                    state.span.add_event(
                        "exception",
                        {
                            "exception.type": _error_type(exception),
                            "exception.message": str(exception)[:1024],
                        },
                    )
            state.span.end()
        if state.instruments is not None:
            _record_process_metrics(state, outcome, exception if is_error else None, failed=failed)
    finally:
        if state.token is not None:
            otel_context.detach(state.token)  # type: ignore[arg-type]


_PERMANENT = frozenset({semconv.OUTCOME_FAILED, semconv.OUTCOME_HANDLED})

_STATUS = {
    semconv.OUTCOME_SUCCESS: semconv.STATUS_SUCCESS,
    semconv.OUTCOME_RETRY: semconv.STATUS_RETRY,
    semconv.OUTCOME_FAILED: semconv.STATUS_FAILURE,
    semconv.OUTCOME_HANDLED: semconv.STATUS_FAILURE,
    semconv.OUTCOME_SKIPPED: semconv.STATUS_SKIPPED,
}


def _record_process_metrics(
    state: _Process, outcome: str, error: BaseException | None, *, failed: bool
) -> None:
    instruments, task = state.instruments, state.task
    assert instruments is not None and task is not None
    elapsed = time.perf_counter() - state.start
    recorded = outcome != semconv.OUTCOME_SKIPPED
    if instruments.consumed_messages is not None:  # the semantic-convention family
        attributes = state.queue.process_attributes
        if error is not None:
            attributes = {**attributes, semconv.ERROR_TYPE: _error_type(error)}
        instruments.consumed_messages.add(1, attributes)
        if recorded and instruments.process_duration is not None:
            instruments.process_duration.record(elapsed, attributes)
    if instruments.tasks is not None:  # the guide's family
        instruments.tasks.add(1, task.by_status[outcome])
        if recorded and instruments.task_duration is not None:
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


def _metric_attributes(operation: str, queue_name: str) -> dict[str, Any]:
    """Attributes shared by spans and the semantic-convention metrics (bounded cardinality)."""
    return {
        semconv.MESSAGING_SYSTEM: semconv.SYSTEM,
        semconv.MESSAGING_OPERATION_NAME: operation,
        semconv.MESSAGING_DESTINATION_NAME: queue_name,
    }


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


def _record_error(span: Span, exception: BaseException) -> None:
    error_type = _error_type(exception)
    span.set_attribute(semconv.ERROR_TYPE, error_type)
    span.record_exception(exception, escaped=True)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exception}"[:1024]))


def _error_type(exception: BaseException) -> str:
    cls = type(exception)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _server_attributes(broker: Broker) -> dict[str, Any]:
    """server.address/server.port where the broker knows them (Redis, RabbitMQ)."""
    try:
        kwargs = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]  # Redis
        host, port = kwargs.get("host") or kwargs.get("path"), kwargs.get("port")
    except AttributeError:
        try:
            parameters = broker.parameters  # type: ignore[attr-defined]  # RabbitMQ: one, or a list
            if isinstance(parameters, list | tuple):
                parameters = parameters[0]
            host, port = parameters.host, parameters.port
        except (AttributeError, IndexError):
            return {}
    attributes: dict[str, Any] = {}
    if isinstance(host, str):
        attributes[semconv.SERVER_ADDRESS] = host
    if isinstance(port, int):
        attributes[semconv.SERVER_PORT] = port
    return attributes


#: Whether a provider is named by environment variable: the API then loads it on first use.
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ or OTEL_PYTHON_METER_PROVIDER in os.environ
_UNKNOWN = object()


def _no_sdk() -> bool:
    """Whether neither a global tracer provider nor a global meter provider has been set.

    Asked for every message while only the API is installed, so it reads the API's two globals (a
    module attribute read each) rather than calling ``get_tracer_provider()``/``get_meter_provider()``,
    which look the environment up on every call (about 0.8 µs each). Falls back to those calls if the
    globals are not where they were, or a provider is named by environment variable.
    """
    tracer_provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    meter_provider = getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN)
    if tracer_provider is not _UNKNOWN and meter_provider is not _UNKNOWN:
        if tracer_provider is not None or meter_provider is not None:
            return False  # an SDK (or any provider) has been set
        if not _PROVIDER_FROM_ENV:
            return True
    return (
        _ProxyMeterProvider is not None
        and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        and isinstance(get_meter_provider(), _ProxyMeterProvider)
    )
