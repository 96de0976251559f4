"""The health answer, built from one queue-state snapshot: the JSON body, its HTTP status and the
commands' exit code. The Django view and command, the ``dramatiq-health`` command and the WSGI/ASGI
app all answer through :func:`answer`, so they answer alike.

Statuses: ``healthy`` (at least ``MIN_WORKERS`` active workers, none stalled), ``degraded`` (fewer, or
one stalled), ``unhealthy`` (the broker could not be read: HTTP ``UNHEALTHY_STATUS``), ``disabled``
(``ENABLED`` off: HTTP 200). Exit codes: 0 healthy or disabled, 1 degraded, 2 unhealthy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ..queue_state import BrokerSnapshot, BrokerUnavailable, QueueStateReader, WorkerStats, redact
from .config import HealthConfig

HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"
DISABLED: Final = "disabled"
#: The commands' exit status per answer status (any other: 0).
EXIT_CODES: Final = {DEGRADED: 1, UNHEALTHY: 2}


def exit_code(body: dict[str, Any]) -> int:
    return EXIT_CODES.get(body.get("status", ""), 0)


def read(
    reader: QueueStateReader, queue_names: Iterable[str] | None = None
) -> tuple[BrokerSnapshot | None, str | None]:
    """``(snapshot, None)``, or ``(None, error)`` with the error in one line without credentials:
    an unreadable broker, or a bug or a misconfiguration, is an answer, never a traceback."""
    try:
        return reader.read(queue_names), None
    except BrokerUnavailable as exc:
        return None, str(exc)
    except Exception as exc:
        return None, describe(exc)


def describe(exc: BaseException) -> str:
    """An unexpected exception in one line, without credentials."""
    return redact(f"{type(exc).__name__}: {exc}")


def worker_stats(snapshot: BrokerSnapshot) -> list[dict[str, Any]]:
    """Workers, each a dict with ``status`` ``active``, ``stale`` or ``stalled``."""
    if snapshot.registry:
        return [worker.asdict() for worker in snapshot.workers]
    # RabbitMQ without a registry: one entry per consumer of the busiest queue
    return [
        {"worker_id": f"consumer-{i}", "status": "active", "queues": []}
        for i in range(snapshot.active_workers)
    ]


def queue_stats(snapshot: BrokerSnapshot) -> list[dict[str, Any]]:
    """Queues, each a dict with ``name``, ``pending``, ``delayed``, ``dead_lettered``, ... ."""
    return [queue.asdict() for queue in snapshot.queues]


def answer(
    config: HealthConfig, snapshot: BrokerSnapshot | None, error: str | None, *, details: bool
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for this snapshot, or for ``error`` when there is none."""
    if not config.ENABLED:
        return 200, {"status": DISABLED, "message": "Task system is disabled"}
    if snapshot is None:
        body: dict[str, Any] = {
            "status": UNHEALTHY,
            "error": error,
            "redis_connection": False,
            "broker_connection": False,
        }
        return config.UNHEALTHY_STATUS, body
    workers = worker_stats(snapshot)
    active = snapshot.active_workers
    stalled = snapshot.stalled_workers
    body = {
        "status": HEALTHY if active >= config.MIN_WORKERS and not stalled else DEGRADED,
        "broker": snapshot.broker,
        "redis_connection": True,
        "broker_connection": True,
        "active_workers": active,
        "total_workers": len(workers),
        "min_workers": config.MIN_WORKERS,
        "total_pending_tasks": snapshot.total_pending,
        # what the counts include: "ready+unacked", or "ready" (RabbitMQ without its management API)
        "counts": snapshot.counts,
        # where the worker registry lives ("redis", "redis-url", "django-db", "memory"), or None
        "registry_store": snapshot.store,
    }
    if snapshot.registry:
        body.update(stall_summary(stalled, config.STALL_TIMEOUT))
    for key in ("management_api_error", "registry_error"):
        if key in snapshot.meta:
            body[key] = snapshot.meta[key]
    if details:
        body["queues"] = queue_stats(snapshot)
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
