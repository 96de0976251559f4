"""The Dramatiq middleware that turns broker and worker hooks into spans and metrics.

:class:`OpenTelemetryMiddleware` is what ``DramatiqInstrumentor`` adds to every broker. It can also
be listed by dotted path in a broker's middleware list (django_dramatiq's
``DRAMATIQ_BROKER["MIDDLEWARE"]``); put it first so its process span encloses the other middleware
and it sees what Retries decided.

The class holds the configuration and the per-queue caches, and is a table of Dramatiq's hooks whose
bodies live in the module of their path:

- :mod:`.sending`: the producer side (``before_enqueue``/``after_enqueue``, the send span, injection,
  the per-thread sends ended by the instrumentor's enqueue wrapper);
- :mod:`.processing`: the consumer side (``before_process_message``, ``after_process_message``,
  ``after_skip_message``: the process span, outcome, metrics and task hooks);
- :mod:`.lifecycle`: the worker's (process boot, registry, flush at shutdown);
- :mod:`.attributes`: the attribute sets cached per queue and per actor; :mod:`.common`: what they
  share.
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

from dramatiq import Middleware
from opentelemetry import trace

from . import lifecycle, processing, semconv, sending
from .attributes import MAX_CACHED_QUEUES, _Queue, _server_attributes, _Task
from .common import DUE_OPTION, _guarded
from .config import AnyMessage, Options
from .exception_signal import ExceptionRecorder, ExceptionSignal
from .metrics import Instruments, instruments_for, queue_gauges_for, reader_probe
from .processing import current_message
from .queue_state.registry import WorkerRegistryMiddleware, beat_interval
from .sending import abandon_sends, guarded_enqueue
from .version import __version__

if TYPE_CHECKING:
    from dramatiq import Broker

# Names imported from this module before its hooks moved out of it.
__all__ = [
    "DUE_OPTION",
    "MAX_CACHED_QUEUES",
    "READ_TIMEOUT",
    "OpenTelemetryMiddleware",
    "abandon_sends",
    "current_message",
    "guarded_enqueue",
]

#: Seconds a queue-gauge read of the broker may take before it is given up.
READ_TIMEOUT = 2.0


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
        self._registry.interval = beat_interval(self.options.stall_timeout, self.options.registry_interval)
        self._registry.redis_url = self.options.registry_redis_url
        self._tracer = trace.get_tracer(
            __name__,
            __version__,
            self.options.tracer_provider,
            schema_url=semconv.SCHEMA_URL,
        )
        self._errors = ExceptionRecorder(ExceptionSignal.from_env(), self.options.logger_provider)
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
        # the registry's in-hand entries carry arguments under the same rule as the spans
        self._registry.args_limit = (
            self.options.capture_args_max_length if self.options.capture_args else None
        )
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
                self.options.worker_timeout,
            )
            if self.options.metrics_enabled and self.options.queue_metrics_enabled
            else None
        )
        if self._queue_gauges is not None and self.options.registry_redis_url is not None:
            self._queue_gauges.registry_redis_url = self.options.registry_redis_url

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

    # -- Dramatiq's hooks: plain functions bound here, so a call costs what a method's did ---------

    before_enqueue = sending.before_enqueue
    after_enqueue = sending.after_enqueue

    before_process_message = processing.before_process_message
    after_process_message = processing.after_process_message
    after_skip_message = processing.after_skip_message

    after_process_boot = lifecycle.after_process_boot
    before_worker_boot = lifecycle.before_worker_boot
    after_worker_boot = lifecycle.after_worker_boot
    before_worker_shutdown = lifecycle.before_worker_shutdown
    after_worker_shutdown = lifecycle.after_worker_shutdown
    _flush = lifecycle._flush

    # -- the per-queue and per-actor caches, the arguments' repr ----------------------------------

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
