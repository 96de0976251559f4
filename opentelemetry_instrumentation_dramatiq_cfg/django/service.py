"""The guide's task service: the calls its ``task_health_check`` view makes, on real broker state.

The guide's view runs with only its import line changed::

    from opentelemetry_instrumentation_dramatiq_cfg.django import get_task_service

One service reads the broker once (one round trip on Redis) and answers every call from that
snapshot, so a view that calls ``check_redis_connection()``, ``get_worker_stats()`` and
``get_queue_stats()`` costs one read. :meth:`TaskService.health` answers the health view and the
``dramatiq_health`` command through :mod:`..health.answer`, as the Django-free probe does.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any

import dramatiq.broker

from ..health import answer
from ..health.answer import DEGRADED, DISABLED, HEALTHY, UNHEALTHY
from ..queue_state import BrokerSnapshot, BrokerUnavailable, QueueStateReader, reader_for_broker
from .conf import HealthSettings, health_settings

__all__ = ["DEGRADED", "DISABLED", "HEALTHY", "UNHEALTHY", "TaskService", "get_task_service"]

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
                reader = self._reader()
            except BrokerUnavailable as exc:
                self._error = str(exc)
            except Exception as exc:  # a misconfiguration: report it, never a traceback
                self._error = answer.describe(exc)
            else:
                self._snapshot, self._error = answer.read(reader)
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
        return answer.worker_stats(self._require())

    def get_queue_stats(self) -> list[dict[str, Any]]:
        """Queues, each a dict with ``name``, ``pending``, ``delayed``, ``dead_lettered``, ... ."""
        return answer.queue_stats(self._require())

    def _require(self) -> BrokerSnapshot:
        snapshot = self.snapshot()
        if snapshot is None:
            raise BrokerUnavailable(self._error or "broker unavailable")
        return snapshot

    # -- the health answer -----------------------------------------------------------------------

    def health(self, *, details: bool) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of the health view (built by :func:`..health.answer.answer`)."""
        if not self.is_enabled():
            return answer.answer(self.config, None, None, details=details)
        return answer.answer(self.config, self.snapshot(), self._error, details=details)


def get_task_service() -> TaskService:
    """A service for one request or one command run (it reads the broker at most once)."""
    return TaskService()
