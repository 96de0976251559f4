"""What the sending, processing and lifecycle hooks share: the middleware's state and small helpers.

:class:`MiddlewareState` is what the hook bodies read of
:class:`~.middleware.OpenTelemetryMiddleware` (set by its ``configure``); they are plain functions
taking it as ``self``, bound in that class's body, so calling one costs what calling a method does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER, OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.metrics import get_meter_provider
from opentelemetry.trace import Link, Span, Status, StatusCode

from . import semconv
from .exception_signal import MAX_MESSAGE_LENGTH

if TYPE_CHECKING:
    from dramatiq import Broker

    from .attributes import _Queue, _Task
    from .config import AnyMessage, Hook, Options
    from .exception_signal import ExceptionRecorder
    from .metrics import Instruments
    from .queue_state.registry import WorkerRegistryMiddleware

try:  # the API's stand-in until an SDK sets a meter provider (no public name for its class)
    from opentelemetry.metrics import _internal as _metrics_api
    from opentelemetry.metrics._internal import _ProxyMeterProvider
except ImportError:  # pragma: no cover - then the fast path is simply never taken
    _metrics_api = None  # type: ignore[assignment]
    _ProxyMeterProvider = None  # type: ignore[assignment,misc]

# The middleware's logger, whatever module a hook body lives in (the name users configure).
_logger = logging.getLogger(__name__.rpartition(".")[0] + ".middleware")

#: Option key holding the time (epoch ms) a delayed message became due, kept across the move
#: from the delay queue (which deletes Dramatiq's own ``eta``), for the queue-wait histogram.
DUE_OPTION = "otel_due_ms"


class MiddlewareState(Protocol):
    """What the hook bodies read of :class:`~.middleware.OpenTelemetryMiddleware`."""

    options: Options
    _tracer: trace.Tracer
    _errors: ExceptionRecorder
    _excluded_actors: frozenset[str]
    _may_be_noop: bool
    _registry: WorkerRegistryMiddleware

    def _recording_instruments(self) -> Instruments | None: ...

    def _queue(self, broker: Broker, queue_name: str) -> _Queue: ...

    def _task(self, actor_name: str, queue: _Queue) -> _Task: ...

    def _capture_args(self, attributes: dict[str, Any], message: AnyMessage) -> None: ...

    def _flush(self) -> None: ...


def _hook_failed(name: str) -> None:
    """Telemetry must never raise into Dramatiq: log at debug level and carry on."""
    _logger.debug("OpenTelemetry %s failed", name, exc_info=True)


def _guarded(hook: Callable[..., None]) -> Callable[..., None]:
    """Run ``hook`` under :func:`_hook_failed` (the per-message hooks inline the same try/except)."""

    def guarded(self: MiddlewareState, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception:
            _hook_failed(hook.__name__)

    guarded.__name__ = hook.__name__
    guarded.__doc__ = hook.__doc__
    return guarded


def _call_hook(hook: Hook | None, span: Span, message: AnyMessage) -> None:
    if hook is None:
        return
    try:
        hook(span, message)
    except Exception:
        _logger.warning("Dramatiq OpenTelemetry hook %r failed", hook, exc_info=True)


def _set_error(span: Span, exception: BaseException) -> None:
    """ERROR status whose description is the exception message alone, and ``error.type``."""
    span.set_attribute(semconv.ERROR_TYPE, semconv.error_type(exception))
    span.set_status(Status(StatusCode.ERROR, str(exception)[:MAX_MESSAGE_LENGTH] or None))


def _creation_link(context: otel_context.Context | None) -> list[Link] | None:
    """A link to the creation context a message carries, if it carries a valid one."""
    if context is None:
        return None
    linked = trace.get_current_span(context).get_span_context()
    return [Link(linked)] if linked.is_valid else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
