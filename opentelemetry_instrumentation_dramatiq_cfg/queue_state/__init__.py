"""Queue state read straight from the broker: counts per queue and live workers.

No OpenTelemetry here: the Django health view, the ``dramatiq_health`` command and the queue gauges
all use this package. Readers are strictly read-only and time-limited::

    from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker

    snapshot = reader_for_broker(dramatiq.get_broker(), timeout=2.0).read()
    snapshot.queues        # (QueueStats(name, pending, delayed, dead_lettered, in_flight, consumers,
                           #             oldest_age), ...)
    snapshot.workers       # (WorkerStats(worker_id, host, pid, queues, threads, last_seen, status,
                           #              processing, finished, busy_for, in_hand), ...)
    snapshot.active_workers
    snapshot.stalled_workers  # alive, but every thread stuck longer than stall_timeout

Workers are the processes that registered through :class:`WorkerRegistryMiddleware` (or the
OpenTelemetry middleware, which calls it): see :mod:`.registry`, and :mod:`.registry_store` for where
the records live (``snapshot.store``) and how other modules join the registry's beat.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKER_TIMEOUT,
    READY_AND_UNACKED,
    READY_ONLY,
    BrokerSnapshot,
    BrokerUnavailable,
    QueueStateReader,
    QueueStats,
    WorkerStats,
    redact,
)
from .registry import WorkerRegistry, WorkerRegistryMiddleware

__all__ = [
    "DEFAULT_STALL_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WORKER_TIMEOUT",
    "READY_AND_UNACKED",
    "READY_ONLY",
    "BrokerSnapshot",
    "BrokerUnavailable",
    "QueueStateReader",
    "QueueStats",
    "WorkerRegistry",
    "WorkerRegistryMiddleware",
    "WorkerStats",
    "reader_for_broker",
    "redact",
]


def reader_for_broker(
    broker: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    rabbitmq_management_url: str | None = None,
    registry_redis_url: str | None = None,
) -> QueueStateReader:
    """The reader for this broker's type (Redis, RabbitMQ or Stub, subclasses included).

    ``rabbitmq_management_url`` (default: ``DRAMATIQ_RABBITMQ_MANAGEMENT_URL``) makes a RabbitMQ
    reader count unacknowledged messages too, through the management HTTP API.
    ``registry_redis_url`` (default: ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL``) reads the worker
    registry from that Redis, beside any broker (see :mod:`.registry_store` for the store chosen)."""
    reader: type[Any]
    options: dict[str, Any] = {}
    if _is_a(broker, "dramatiq.brokers.stub", "StubBroker"):
        from .stub import StubQueueState as reader
    elif _is_a(broker, "dramatiq.brokers.redis", "RedisBroker"):
        from .redis import RedisQueueState as reader
    elif _is_a(broker, "dramatiq.brokers.rabbitmq", "RabbitmqBroker"):
        from .rabbitmq import RabbitmqQueueState as reader

        options["management_url"] = rabbitmq_management_url
    else:
        raise TypeError(
            f"No queue-state reader for {type(broker).__module__}.{type(broker).__qualname__}: "
            "supported brokers are RedisBroker, RabbitmqBroker and StubBroker"
        )
    result: QueueStateReader = reader(
        broker,
        timeout=timeout,
        worker_timeout=worker_timeout,
        stall_timeout=stall_timeout,
        registry_redis_url=registry_redis_url,
        **options,
    )
    return result


def _is_a(broker: Any, module: str, name: str) -> bool:
    """isinstance without importing a broker whose client library is not installed."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError:
        return False
    return isinstance(broker, cls)
