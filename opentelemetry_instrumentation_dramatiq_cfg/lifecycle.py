"""The worker's lifecycle: process boot, the worker registry, and the flush at shutdown.

Bound in :class:`~.middleware.OpenTelemetryMiddleware`; each runs once per process or worker, so each
is wrapped by :func:`~.common._guarded` (the per-message hooks inline their guard instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.metrics import get_meter_provider

from . import hooks, processes, shutdown
from .common import MiddlewareState, _guarded

if TYPE_CHECKING:
    from dramatiq import Broker
    from dramatiq.worker import Worker


@_guarded
def after_process_boot(self: MiddlewareState, broker: Broker) -> None:
    """Emitted in the worker processes of the ``dramatiq`` command only (see :mod:`.processes`).
    Telemetry is flushed on the first SIGTERM too (see :mod:`.shutdown`)."""
    processes.mark_worker_process()
    processes.warn_about_standard_prometheus()
    shutdown.flush_on_first_signal(self._flush)


@_guarded
def before_worker_boot(self: MiddlewareState, broker: Broker, worker: Worker) -> None:
    """Map the worker's threads to its registry entry before they take messages (progress)."""
    self._registry.before_worker_boot(broker, worker)


@_guarded
def after_worker_boot(self: MiddlewareState, broker: Broker, worker: Worker) -> None:
    """Register the worker (see :mod:`.queue_state.registry`) for the health view."""
    self._registry.after_worker_boot(broker, worker)


@_guarded
def before_worker_shutdown(self: MiddlewareState, broker: Broker, worker: Worker) -> None:
    self._registry.before_worker_shutdown(broker, worker)


@_guarded
def after_worker_shutdown(self: MiddlewareState, broker: Broker, worker: Worker) -> None:
    """Flush buffered hooks, spans and, in the command's worker processes, metrics.

    Forked worker processes end with ``os._exit``: the SDK's atexit shutdown never runs there.
    Metrics are flushed only there: elsewhere atexit does it, and a flush would make the OTel
    Prometheus exporter repeat every series on its next scrape.
    """
    self._flush()


def _flush(self: MiddlewareState) -> None:
    hooks.flush_all()
    providers: list[Any] = [self.options.tracer_provider or trace.get_tracer_provider()]
    if processes.is_worker_process():
        providers.append(self.options.meter_provider or get_meter_provider())
    for provider in providers:
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush()
