"""OpenTelemetry instrumentation for `Dramatiq <https://dramatiq.io>`_.

Usage
-----

Without touching code, with the OpenTelemetry distro installed::

    opentelemetry-instrument dramatiq my_app.tasks

or in code, before or after the broker is created::

    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

    DramatiqInstrumentor().instrument()

``instrument()`` puts one :class:`~.middleware.OpenTelemetryMiddleware` first in the middleware
list of the broker set with ``dramatiq.set_broker`` and of every broker created or set afterwards
(it never creates a broker itself). A middleware already listed by dotted path, as django_dramatiq
settings do, is reused and moved first, never duplicated. ``uninstrument()`` removes it from every
broker and undoes every patch.

Every message sent gets a ``send {queue}`` PRODUCER span whose context travels in the message
options; every message processed gets a ``process {queue}`` CONSUMER span, child of it (or linked to
it with ``use_links``), current while the actor runs. The same hooks record metrics.

Configuration
-------------

``instrument()`` takes the keyword arguments below; each one left out is read from its environment
variable (see :mod:`.config` for details and accepted values).

* ``tracer_provider`` / ``meter_provider`` / ``logger_provider``: providers to use instead of the
  global ones (the logger provider receives exception log events, see
  ``OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN`` in :mod:`.exception_signal`).
* ``excluded_actors`` / ``excluded_queues`` (``OTEL_PYTHON_DRAMATIQ_EXCLUDED_ACTORS`` /
  ``..._EXCLUDED_QUEUES``): names whose messages get no telemetry.
* ``use_links`` (``OTEL_PYTHON_DRAMATIQ_USE_LINKS``): start each process span as a new trace linked to
  the producer instead of as its child.
* ``publish_hook`` / ``process_hook``: ``hook(span, message)`` called on each send / process span
  (a callable or a dotted path).
* ``capture_args`` (``OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS``) and ``capture_args_max_length``
  (``..._CAPTURE_ARGS_MAX_LENGTH``, default 1024): record a truncated ``repr`` of the message's args.
* ``failure_hooks`` / ``completion_hooks`` (``..._FAILURE_HOOKS`` / ``..._COMPLETION_HOOKS``):
  ``hook(outcome)`` called once per message that fails for good / once per processed attempt (see
  :mod:`.hooks`).
* ``traces_enabled`` / ``metrics_enabled`` (``..._TRACES_ENABLED`` / ``..._METRICS_ENABLED``): turn
  either signal off.
* ``metrics_set`` (``OTEL_PYTHON_DRAMATIQ_METRICS_SET``, default ``all``): ``guide`` records only
  ``dramatiq.tasks`` and ``dramatiq.task.duration``, ``semconv`` only the messaging semantic-convention
  metrics, for a lighter cost per message.
* ``queue_metrics_enabled`` / ``queue_metrics_interval`` (``..._QUEUE_METRICS_ENABLED`` /
  ``..._QUEUE_METRICS_INTERVAL``, default 10 s): the queue-state gauges and how often they read the
  broker.
* ``suppress_broker_spans`` (``OTEL_PYTHON_DRAMATIQ_SUPPRESS_BROKER_SPANS``, default true): run
  Dramatiq's own broker traffic with OpenTelemetry instrumentation suppressed, so that the Redis and
  pika instrumentations add no trace of their own (see below); ``false`` shows it again.

Broker traffic
--------------

Next to ``opentelemetry-instrumentation-redis`` or ``-pika`` (``opentelemetry-bootstrap`` installs
them), each message makes one trace: ``send {queue}`` and its ``process {queue}``. What Dramatiq
does with its broker for itself runs suppressed, in every worker process: the consumer's polling
and fetches, acks, nacks, requeues, heartbeats, delayed messages moved when due, and this
package's worker registry and queue-gauge reads. The enqueue's broker call runs in the send span's
context: a Redis ``EVALSHA`` span is its child; on RabbitMQ pika's own ``{queue} send`` PRODUCER
span (and its ``traceparent`` header) is not emitted. Redis or RabbitMQ calls an actor makes are
children of its process span as before. Suppression is honoured by
``opentelemetry-instrumentation-redis`` from 0.60b0 on; older releases ignore it.

``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=dramatiq`` keeps ``opentelemetry-instrument`` from loading it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection
from typing import Any

import dramatiq
import dramatiq.broker
import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from . import processes
from .config import Options
from .middleware import OpenTelemetryMiddleware
from .package import _instruments
from .quiet import BrokerTraffic
from .sending import guarded_enqueue
from .version import __version__

__all__ = ["DramatiqInstrumentor", "OpenTelemetryMiddleware", "__version__"]

_logger = logging.getLogger(__name__)


class DramatiqInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds :class:`OpenTelemetryMiddleware` to every Dramatiq broker; see the module docs."""

    # BaseInstrumentor is a singleton whose __init__ runs on every call: state lives here.
    _brokers: weakref.WeakSet[dramatiq.Broker] = weakref.WeakSet()
    _patched_enqueues: list[type] = []
    _options: dict[str, Any] = {}
    _broker_traffic: BrokerTraffic | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        options = {key: kwargs[key] for key in Options.__dataclass_fields__ if key in kwargs}
        resolved = Options.resolve(**options)  # bad options fail here, before anything is patched
        processes.warn_about_standard_prometheus()
        self._options = options
        self._brokers = weakref.WeakSet()
        self._patched_enqueues = []
        self._broker_traffic = None
        if resolved.suppress_broker_spans:
            self._broker_traffic = BrokerTraffic()
            self._broker_traffic.install()
        wrapt.wrap_function_wrapper(dramatiq.Broker, "__init__", self._after_broker_init)
        wrapt.wrap_function_wrapper(dramatiq.broker, "set_broker", self._after_set_broker)
        if dramatiq.set_broker is not dramatiq.broker.set_broker:
            wrapt.wrap_function_wrapper(dramatiq, "set_broker", self._after_set_broker)
        if dramatiq.broker.global_broker is not None:
            self._attach(dramatiq.broker.global_broker)

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(dramatiq.Broker, "__init__")
        unwrap(dramatiq.broker, "set_broker")
        unwrap(dramatiq, "set_broker")  # a no-op unless it was wrapped apart from dramatiq.broker's
        for cls in self._patched_enqueues:
            unwrap(cls, "enqueue")
        self._patched_enqueues = []
        if self._broker_traffic is not None:
            self._broker_traffic.uninstall()
            self._broker_traffic = None
        brokers = set(self._brokers)
        if dramatiq.broker.global_broker is not None:
            brokers.add(dramatiq.broker.global_broker)
        for broker in brokers:
            broker.middleware[:] = [
                m for m in broker.middleware if not isinstance(m, OpenTelemetryMiddleware)
            ]
        self._brokers = weakref.WeakSet()

    # -- patches --------------------------------------------------------------------------------

    def _after_broker_init(self, wrapped: Any, instance: dramatiq.Broker, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        self._attach(instance)

    def _after_set_broker(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        if dramatiq.broker.global_broker is not None:
            self._attach(dramatiq.broker.global_broker)

    def _attach(self, broker: dramatiq.Broker) -> None:
        """Make one OpenTelemetryMiddleware the first middleware of ``broker``."""
        try:
            ours = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
            if ours:
                middleware = ours[0]
                if self._options:
                    middleware.configure(**self._options)
            else:
                middleware = OpenTelemetryMiddleware(**self._options)
            others = [m for m in broker.middleware if not isinstance(m, OpenTelemetryMiddleware)]
            broker.middleware[:] = [middleware, *others]
            middleware.watch_queues(broker)
            self._brokers.add(broker)
            self._patch_enqueue(type(broker))
            if self._broker_traffic is not None:
                self._broker_traffic.watch(broker)
        except Exception:
            _logger.warning("Could not instrument Dramatiq broker %r", broker, exc_info=True)

    def _patch_enqueue(self, broker_class: type) -> None:
        """Wrap the ``enqueue`` this class uses, so a failed enqueue ends its send span with ERROR."""
        owner = next(cls for cls in broker_class.__mro__ if "enqueue" in vars(cls))
        if owner in self._patched_enqueues:
            return
        wrapt.wrap_function_wrapper(owner, "enqueue", _traced_enqueue)
        self._patched_enqueues.append(owner)


def _traced_enqueue(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return guarded_enqueue(wrapped, *args, **kwargs)
