"""Queue state of a ``StubBroker`` (tests, the demo): read from its in-memory queues."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from dramatiq.common import dq_name

from .base import (
    DEFAULT_TIMEOUT,
    DEFAULT_WORKER_TIMEOUT,
    BrokerSnapshot,
    QueueStats,
    WorkerStats,
    canonical_queues,
    validate_timeout,
    worker_status,
)
from .registry import memory_registry


class StubQueueState:
    """Read-only view of a ``StubBroker``'s queues and the workers registered in this process."""

    def __init__(
        self,
        broker: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
    ) -> None:
        self.broker = broker
        self.timeout = validate_timeout(timeout)
        self.worker_timeout = worker_timeout

    def __repr__(self) -> str:
        return "StubQueueState()"

    def read(self, queue_names: Iterable[str] | None = None) -> BrokerSnapshot:
        queues = []
        for name in canonical_queues(self.broker, queue_names):
            pending = self.broker.queues.get(name)
            delayed = self.broker.queues.get(dq_name(name))
            queues.append(
                QueueStats(
                    name,
                    pending=pending.qsize() if pending is not None else 0,
                    delayed=delayed.qsize() if delayed is not None else 0,
                    dead_lettered=len(self.broker.dead_letters_by_queue.get(name, ())),
                )
            )
        now = time.time()
        workers = tuple(
            WorkerStats(
                worker_id=worker_id,
                host=record["host"],
                pid=record["pid"],
                queues=tuple(record["queues"]),
                threads=record["threads"],
                last_seen=record["last_seen"],
                status=worker_status(record["last_seen"], now, self.worker_timeout),
            )
            for worker_id, record in sorted(memory_registry.get(self.broker, {}).items())
        )
        return BrokerSnapshot("stub", tuple(queues), workers)

    def ping(self) -> bool:
        return True
