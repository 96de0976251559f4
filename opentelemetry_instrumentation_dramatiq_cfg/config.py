"""Options of the instrumentation, from keyword arguments or ``OTEL_PYTHON_DRAMATIQ_*`` variables.

A keyword argument wins over its environment variable; a value that cannot be understood raises
:class:`ValueError` naming the option, so a typo fails at start-up instead of silently changing
what is traced.

================================================  =====================================  =========
Option (keyword argument)                         Environment variable                   Default
================================================  =====================================  =========
``tracer_provider``                               (global provider)                      global
``meter_provider``                                (global provider)                      global
``logger_provider`` (exception log events)         (global provider)                      global
``excluded_actors`` (iterable of actor names)     ``OTEL_PYTHON_DRAMATIQ_EXCLUDED_ACTORS``  none
``excluded_queues`` (iterable of queue names)     ``OTEL_PYTHON_DRAMATIQ_EXCLUDED_QUEUES``  none
``use_links`` (bool)                              ``OTEL_PYTHON_DRAMATIQ_USE_LINKS``        false
``publish_hook`` (callable or dotted path)        --                                     none
``process_hook`` (callable or dotted path)        --                                     none
``capture_args`` (bool)                           ``OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS``     false
``capture_args_max_length`` (int > 0)             ``OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS_MAX_LENGTH``  1024
``failure_hooks`` (callables or dotted paths)     ``OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS``    none
``completion_hooks`` (callables or dotted paths)  ``OTEL_PYTHON_DRAMATIQ_COMPLETION_HOOKS``  none
``traces_enabled`` (bool)                         ``OTEL_PYTHON_DRAMATIQ_TRACES_ENABLED``   true
``metrics_enabled`` (bool)                        ``OTEL_PYTHON_DRAMATIQ_METRICS_ENABLED``  true
``metrics_set`` (all, guide, semconv)              ``OTEL_PYTHON_DRAMATIQ_METRICS_SET``      all
``queue_metrics_enabled`` (bool)                  ``OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_ENABLED``  true
``queue_metrics_interval`` (seconds, >= 0)        ``OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL``  10
``stall_timeout`` (seconds, >= 0)                 ``OTEL_PYTHON_DRAMATIQ_STALL_TIMEOUT``    600
``worker_timeout`` (seconds, > 0)                 ``OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT``   health view's
``registry_interval`` (seconds, > 0)              ``OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL``  5
``registry_redis_url`` (Redis URL)                ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL``  none
``suppress_broker_spans`` (bool)                  ``OTEL_PYTHON_DRAMATIQ_SUPPRESS_BROKER_SPANS``  true
================================================  =====================================  =========

``failure_hooks`` and ``completion_hooks`` are called as ``hook(outcome)`` with a
:class:`~opentelemetry_instrumentation_dramatiq_cfg.hooks.TaskOutcome`: the first once per message
that fails for good, the second once per processed attempt (see :mod:`.hooks`).

``metrics_set`` chooses the per-message instruments: ``all`` (both families), ``guide`` (only
``dramatiq.tasks`` and ``dramatiq.task.duration``, the monitoring guide's series) or ``semconv`` (only
the messaging semantic-convention metrics); the queue-state gauges follow ``queue_metrics_enabled``.

``stall_timeout``: a live worker whose every thread has held a message with none finished for longer
is counted ``stalled`` by the ``dramatiq.worker.count`` gauge (see :mod:`.queue_state.registry`); it
must be at least two ``registry_interval`` beats (the default beat is 5 s, or half the stall timeout
when shorter). ``worker_timeout``: a worker unseen for longer is counted ``stale``; by default the
health view's (``DRAMATIQ_HEALTH["WORKER_TIMEOUT"]`` where the Django app runs), else 60.
``registry_redis_url``: where the registry lives beside any broker (see
:mod:`.queue_state.registry_store`).

Exceptions of failed sends and attempts are recorded as span events, log events (to
``logger_provider``) or both, as ``OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN`` says (see
:mod:`.exception_signal`).

``suppress_broker_spans`` runs Dramatiq's own broker traffic (polling, acks, heartbeats, delayed-message
moves, this package's registry and gauges) with OpenTelemetry instrumentation suppressed, and an
enqueue's RabbitMQ publish too, so the Redis and pika instrumentations add no trace of their own (see
:mod:`.quiet`). ``false`` shows that traffic again.

Lists in environment variables are comma-separated; flags accept true/false, 1/0, yes/no, on/off.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Union

from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, TracerProvider

from .hooks import TaskHook
from .queue_state.base import DEFAULT_STALL_TIMEOUT
from .queue_state.registry import beat_interval

if TYPE_CHECKING:
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

#: A message as hooks see it: the ``Message`` being sent, or the ``MessageProxy`` being processed.
AnyMessage = Union["Message[Any]", "MessageProxy"]
#: ``hook(span, message)``: called with the send span (publish) or the process span (process).
Hook = Callable[[Span, AnyMessage], None]

ENV_PREFIX: Final = "OTEL_PYTHON_DRAMATIQ_"
DEFAULT_CAPTURE_ARGS_MAX_LENGTH: Final = 1024
DEFAULT_QUEUE_METRICS_INTERVAL: Final = 10.0

#: ``metrics_set`` values: both metric families, the guide's series only, the semantic conventions only.
METRICS_ALL: Final = "all"
METRICS_GUIDE: Final = "guide"
METRICS_SEMCONV: Final = "semconv"
METRICS_SETS: Final = (METRICS_ALL, METRICS_GUIDE, METRICS_SEMCONV)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Options:
    """The resolved options of one :class:`~.middleware.OpenTelemetryMiddleware`."""

    #: Tracer provider to use; `None` (the default) takes the global one.
    tracer_provider: TracerProvider | None = None
    #: Meter provider to use; `None` (the default) takes the global one.
    meter_provider: MeterProvider | None = None
    #: Logger provider for exception log events (`OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN`); `None` (the
    #: default) takes the global one.
    logger_provider: LoggerProvider | None = None
    #: Actor names whose messages get no telemetry (comma-separated in the variable).
    excluded_actors: frozenset[str] = frozenset()
    #: Queue names whose messages get no telemetry (comma-separated in the variable).
    excluded_queues: frozenset[str] = frozenset()
    #: Start each process span as a new trace **linked** to the send span instead of as its child.
    use_links: bool = False
    #: `hook(span, message)` called with every send span (a callable or a dotted path).
    publish_hook: Hook | None = None
    #: `hook(span, message_proxy)` called with every process span, before the actor runs.
    process_hook: Hook | None = None
    #: Record the `repr` of args and kwargs on spans (may contain personal data: off by default).
    capture_args: bool = False
    #: Cap, in characters, of each captured representation.
    capture_args_max_length: int = DEFAULT_CAPTURE_ARGS_MAX_LENGTH
    #: `hook(outcome)` called once per message that fails for good (callables or dotted paths).
    failure_hooks: tuple[TaskHook, ...] = ()
    #: `hook(outcome)` called once per processed attempt (callables or dotted paths).
    completion_hooks: tuple[TaskHook, ...] = ()
    #: Turn spans off (trace context is still propagated).
    traces_enabled: bool = True
    #: Turn all metrics off, independently of traces.
    metrics_enabled: bool = True
    #: Per-message instruments: `all` (both families and the guide-style extras), `guide` (only
    #: `dramatiq.tasks` and `dramatiq.task.duration`) or `semconv` (only the `messaging.*` metrics).
    metrics_set: str = METRICS_ALL
    #: Turn the queue-state gauges off (e.g. in web processes).
    queue_metrics_enabled: bool = True
    #: Minimum seconds between two broker reads for the queue gauges.
    queue_metrics_interval: float = DEFAULT_QUEUE_METRICS_INTERVAL
    #: Seconds every thread of a live worker may hold a message with none finished before the
    #: `dramatiq.worker.count` gauge counts it `stalled` (wherever the worker registry has a store; see the
    #: reliability page).
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    #: Seconds without a registry beat before the `dramatiq.worker.count` gauge counts a worker `stale`;
    #: `None`: as the health view, `DRAMATIQ_HEALTH["WORKER_TIMEOUT"]` where the Django app runs, else 60.
    worker_timeout: float | None = None
    #: Seconds between two worker-registry beats of a worker process; `None`: 5, or half of
    #: `stall_timeout` when that is shorter. A `stall_timeout` shorter than two beats is refused.
    registry_interval: float | None = None
    #: A Redis (`redis://host:6379/0`) keeping the worker registry beside any broker (RabbitMQ
    #: included); `None`: the Redis broker's own Redis, else the Django database where the Django app
    #: is installed (see the Django page). Never logged.
    registry_redis_url: str | None = field(default=None, repr=False)
    #: Run Dramatiq's own broker traffic (polling, acks, heartbeats, delayed-message moves, this
    #: package's registry and gauges) and an enqueue's RabbitMQ publish with instrumentation suppressed.
    suppress_broker_spans: bool = True

    @classmethod
    def resolve(
        cls,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        excluded_actors: Iterable[str] | str | None = None,
        excluded_queues: Iterable[str] | str | None = None,
        use_links: bool | None = None,
        publish_hook: Hook | str | None = None,
        process_hook: Hook | str | None = None,
        capture_args: bool | None = None,
        capture_args_max_length: int | None = None,
        failure_hooks: Iterable[TaskHook | str] | str | None = None,
        completion_hooks: Iterable[TaskHook | str] | str | None = None,
        traces_enabled: bool | None = None,
        metrics_enabled: bool | None = None,
        metrics_set: str | None = None,
        queue_metrics_enabled: bool | None = None,
        queue_metrics_interval: float | None = None,
        stall_timeout: float | None = None,
        worker_timeout: float | None = None,
        registry_interval: float | None = None,
        registry_redis_url: str | None = None,
        suppress_broker_spans: bool | None = None,
    ) -> Options:
        """Options from keyword arguments, falling back to the environment, then to defaults."""
        max_length = capture_args_max_length
        if max_length is None:
            max_length = _env_int("CAPTURE_ARGS_MAX_LENGTH", DEFAULT_CAPTURE_ARGS_MAX_LENGTH)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
            raise ValueError(f"capture_args_max_length must be a positive integer, got {max_length!r}")
        stall = _seconds("stall_timeout", stall_timeout, DEFAULT_STALL_TIMEOUT)
        interval = _optional_seconds("registry_interval", registry_interval)
        if interval is not None:
            beat_interval(stall, interval)  # a stall timeout shorter than two beats: ValueError
        return cls(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            logger_provider=logger_provider,
            excluded_actors=_names("excluded_actors", excluded_actors),
            excluded_queues=_names("excluded_queues", excluded_queues),
            use_links=_flag("use_links", use_links, default=False),
            publish_hook=_hook("publish_hook", publish_hook),
            process_hook=_hook("process_hook", process_hook),
            capture_args=_flag("capture_args", capture_args, default=False),
            capture_args_max_length=max_length,
            failure_hooks=_hooks("failure_hooks", failure_hooks),
            completion_hooks=_hooks("completion_hooks", completion_hooks),
            traces_enabled=_flag("traces_enabled", traces_enabled, default=True),
            metrics_enabled=_flag("metrics_enabled", metrics_enabled, default=True),
            metrics_set=_choice("metrics_set", metrics_set, METRICS_SETS),
            queue_metrics_enabled=_flag("queue_metrics_enabled", queue_metrics_enabled, default=True),
            queue_metrics_interval=_seconds("queue_metrics_interval", queue_metrics_interval),
            stall_timeout=stall,
            worker_timeout=_optional_seconds("worker_timeout", worker_timeout),
            registry_interval=interval,
            registry_redis_url=_url("registry_redis_url", registry_redis_url),
            suppress_broker_spans=_flag("suppress_broker_spans", suppress_broker_spans, default=True),
        )


def _env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def _flag(option: str, value: bool | None, *, default: bool) -> bool:
    if value is not None:
        if not isinstance(value, bool):
            raise ValueError(f"{option} must be True or False, got {value!r}")
        return value
    raw = os.environ.get(_env_name(option))
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{_env_name(option)} must be true or false, got {raw!r}")


def _choice(option: str, value: str | None, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default), case-insensitive in the environment variable."""
    if value is not None:
        if value not in choices:
            raise ValueError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
        return value
    raw = os.environ.get(_env_name(option))
    if raw is None or not raw.strip():
        return choices[0]
    text = raw.strip().lower()
    if text not in choices:
        raise ValueError(f"{_env_name(option)} must be one of {', '.join(choices)}; got {raw!r}")
    return text


def _seconds(option: str, value: float | None, default: float = DEFAULT_QUEUE_METRICS_INTERVAL) -> float:
    if value is None:
        raw = os.environ.get(_env_name(option), "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            raise ValueError(f"{_env_name(option)} must be a number of seconds, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"{option} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _optional_seconds(option: str, value: float | None) -> float | None:
    """A positive number of seconds from the keyword or the variable; ``None`` when neither is set."""
    if value is None:
        raw = os.environ.get(_env_name(option), "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{_env_name(option)} must be a number of seconds, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 3600:
        raise ValueError(f"{option} must be a number of seconds in (0, 3600), got {value!r}")
    return float(value)


def _url(option: str, value: str | None) -> str | None:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL (never repeated in errors: it may hold a password)."""
    if value is None:
        value = os.environ.get(_env_name(option), "").strip() or None
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{option} must be a redis://, rediss:// or unix:// URL")
    return value


def _env_int(option: str, default: int) -> int:
    raw = os.environ.get(_env_name(option))
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{_env_name(option)} must be an integer, got {raw!r}") from None


def _names(option: str, value: Iterable[str] | str | None) -> frozenset[str]:
    if value is None:
        value = os.environ.get(_env_name(option), "")
    if isinstance(value, str):
        value = value.split(",")
    names = []
    for name in value:
        if not isinstance(name, str):
            raise ValueError(f"{option} must contain names (str), got {name!r}")
        if name.strip():
            names.append(name.strip())
    return frozenset(names)


def _hooks(option: str, value: Iterable[Any] | str | None) -> tuple[TaskHook, ...]:
    """A list of callables or dotted paths (comma-separated in the environment variable)."""
    if value is None:
        value = os.environ.get(_env_name(option), "")
    if isinstance(value, str):
        value = value.split(",")
    elif callable(value):
        value = [value]
    items = [item.strip() if isinstance(item, str) else item for item in value]
    return tuple(_hook(option, item) for item in items if item != "")


def _hook(option: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    if not isinstance(value, str) or "." not in value:
        raise ValueError(f"{option} must be a callable or a dotted path 'module.function', got {value!r}")
    module_name, _, attribute = value.rpartition(".")
    try:
        hook: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{option}: cannot import {value!r}: {exc}") from exc
    if not callable(hook):
        raise ValueError(f"{option}: {value!r} is not callable")
    return hook
