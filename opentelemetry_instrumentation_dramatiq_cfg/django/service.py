"""The guide's task service: the calls its ``task_health_check`` view makes, on real broker state.

The guide's view runs with only its import line changed::

    from opentelemetry_instrumentation_dramatiq_cfg.django import get_task_service

One service reads the broker once (one round trip on Redis) and answers every call from that
snapshot, so a view that calls ``check_redis_connection()``, ``get_worker_stats()`` and
``get_queue_stats()`` costs one read. :meth:`TaskService.health` builds the JSON body of the health
view and of the ``dramatiq_health`` command.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any

import dramatiq.broker

from ..queue_state import (
    BrokerSnapshot,
    BrokerUnavailable,
    QueueStateReader,
    WorkerStats,
    reader_for_broker,
    redact,
)
from .conf import HealthSettings, health_settings

HEALTHY, DEGRADED, UNHEALTHY, DISABLED = "healthy", "degraded", "unhealthy", "disabled"

_readers: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], QueueStateReader]] = (
    weakref.WeakKeyDictionary()
)


class TaskService:
    """Health of the Dramatiq broker configured for this Django project."""

    def __init__(self, config: HealthSettings | None = None) -> None:
        self.config = config or health_settings()
        self._snapshot: BrokerSnapshot | None = None
        self._error: str | None = None

    def is_enabled(self) -> bool:
        return self.config.ENABLED

    def broker(self) -> dramatiq.Broker:
        """The broker to read: ``BROKER`` (dotted path), else the global one django_dramatiq set."""
        target = self.config.BROKER
        if isinstance(target, str):
            module, _, attribute = target.rpartition(".")
            target = getattr(importlib.import_module(module), attribute)
        if target is None:
            target = dramatiq.broker.global_broker  # never get_broker(): it would create one
        if target is None:
            raise BrokerUnavailable(
                "No Dramatiq broker is configured: set DRAMATIQ_BROKER (django_dramatiq) or call "
                "dramatiq.set_broker() before the health view runs"
            )
        return target  # type: ignore[no-any-return]

    def snapshot(self) -> BrokerSnapshot | None:
        """The broker state, read once per service; ``None`` (and :attr:`error`) when unreadable."""
        if self._snapshot is None and self._error is None:
            try:
                self._snapshot = self._reader().read()
            except BrokerUnavailable as exc:
                self._error = str(exc)
            except Exception as exc:  # a bug or a misconfiguration: report it, never a traceback
                self._error = redact(f"{type(exc).__name__}: {exc}")
        return self._snapshot

    def _reader(self) -> QueueStateReader:
        """The broker's reader, kept between requests so its connection is reused."""
        broker = self.broker()
        management = self.config.RABBITMQ_MANAGEMENT_URL
        registry_url = self.config.REGISTRY_REDIS_URL
        key = (
            self.config.TIMEOUT,
            self.config.WORKER_TIMEOUT,
            self.config.STALL_TIMEOUT,
            management,
            registry_url,
            self.config.REGISTRY_DATABASE,
        )
        readers = _readers.setdefault(broker, {})
        if key not in readers:
            readers[key] = reader_for_broker(
                broker,
                timeout=self.config.TIMEOUT,
                worker_timeout=self.config.WORKER_TIMEOUT,
                stall_timeout=self.config.STALL_TIMEOUT,
                rabbitmq_management_url=management,
                registry_redis_url=registry_url,
            )
        return readers[key]

    @property
    def error(self) -> str | None:
        self.snapshot()
        return self._error

    # -- the guide's calls -----------------------------------------------------------------------

    def check_broker_connection(self) -> bool:
        return self.snapshot() is not None

    def check_redis_connection(self) -> bool:
        """The guide's name for :meth:`check_broker_connection` (whatever the broker is)."""
        return self.check_broker_connection()

    def get_worker_stats(self) -> list[dict[str, Any]]:
        """Workers, each a dict with ``status`` ``active``, ``stale`` or ``stalled`` (raises if
        unreadable)."""
        snapshot = self._require()
        if snapshot.registry:
            return [worker.asdict() for worker in snapshot.workers]
        # RabbitMQ without a registry: one entry per consumer of the busiest queue
        return [
            {"worker_id": f"consumer-{i}", "status": "active", "queues": []}
            for i in range(snapshot.active_workers)
        ]

    def get_queue_stats(self) -> list[dict[str, Any]]:
        """Queues, each a dict with ``name``, ``pending``, ``delayed``, ``dead_lettered``, ... ."""
        return [queue.asdict() for queue in self._require().queues]

    def _require(self) -> BrokerSnapshot:
        snapshot = self.snapshot()
        if snapshot is None:
            raise BrokerUnavailable(self._error or "broker unavailable")
        return snapshot

    # -- the health answer -----------------------------------------------------------------------

    def health(self, *, details: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of the health view."""
        if not self.is_enabled():
            return 200, {"status": DISABLED, "message": "Task system is disabled"}
        snapshot = self.snapshot()
        if snapshot is None:
            body: dict[str, Any] = {
                "status": UNHEALTHY,
                "error": self._error,
                "redis_connection": False,
                "broker_connection": False,
            }
            return self.config.UNHEALTHY_STATUS, body
        workers = self.get_worker_stats()
        active = snapshot.active_workers
        stalled = snapshot.stalled_workers
        body = {
            "status": HEALTHY if active >= self.config.MIN_WORKERS and not stalled else DEGRADED,
            "broker": snapshot.broker,
            "redis_connection": True,
            "broker_connection": True,
            "active_workers": active,
            "total_workers": len(workers),
            "min_workers": self.config.MIN_WORKERS,
            "total_pending_tasks": snapshot.total_pending,
            # what the counts include: "ready+unacked", or "ready" (RabbitMQ without its management API)
            "counts": snapshot.counts,
            # where the worker registry lives ("redis", "redis-url", "django-db", "memory"), or None
            "registry_store": snapshot.store,
        }
        if snapshot.registry:
            body.update(stall_summary(stalled, self.config.STALL_TIMEOUT))
        for key in ("management_api_error", "registry_error"):
            if key in snapshot.meta:
                body[key] = snapshot.meta[key]
        if details:
            body["queues"] = self.get_queue_stats()
            body["workers"] = workers
            if snapshot.registry:
                mark_stalled_queues(body["queues"], stalled)
        return 200, body


def stall_summary(stalled: tuple[WorkerStats, ...], timeout: float) -> dict[str, Any]:
    """``stalled_workers`` and, when there are some, ``reason`` (no queue name: that is a detail)."""
    summary: dict[str, Any] = {"stalled_workers": len(stalled)}
    if stalled:
        longest = max(worker.busy_for for worker in stalled)
        summary["reason"] = (
            f"{len(stalled)} worker(s) stalled: every thread has held a message with none finished "
            f"for up to {longest:.0f} s (stall timeout {timeout:g} s)"
        )
    return summary


def mark_stalled_queues(queues: list[dict[str, Any]], stalled: tuple[WorkerStats, ...]) -> None:
    """Give each queue ``stalled_workers`` and ``stalled_for`` (seconds, ``None`` when none)."""
    for queue in queues:
        consuming = [worker.busy_for for worker in stalled if queue["name"] in worker.queues]
        queue["stalled_workers"] = len(consuming)
        queue["stalled_for"] = max(consuming, default=None)


def get_task_service() -> TaskService:
    """A service for one request or one command run (it reads the broker at most once)."""
    return TaskService()
