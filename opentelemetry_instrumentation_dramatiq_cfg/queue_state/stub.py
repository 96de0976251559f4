"""Queue state of a ``StubBroker`` (tests, the demo): read from its in-memory queues.

pending = ready messages of ``Q``; in flight = delivered to a worker and not yet acknowledged;
delayed = messages of ``Q.DQ`` waiting or held by a worker until due; dead-lettered = the broker's
dead letters of the queue.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from queue import Queue
from typing import Any

from dramatiq.common import dq_name

from .base import BrokerReader, BrokerSnapshot, QueueStats, age, canonical_queues, waiting_since


class StubQueueState(BrokerReader):
    """Read-only view of a ``StubBroker``'s queues and the workers registered in this process."""

    def __repr__(self) -> str:
        return "StubQueueState()"

    def read(self, queue_names: Iterable[str] | None = None) -> BrokerSnapshot:
        queues = []
        now = time.time()
        for name in canonical_queues(self.broker, queue_names):
            # A queue.Queue's unfinished_tasks counts what was put and not yet acknowledged
            # (task_done): ready messages plus those a worker holds.
            pending = self.broker.queues.get(name)
            delayed = self.broker.queues.get(dq_name(name))
            head = _head(pending)
            queues.append(
                QueueStats(
                    name,
                    pending=pending.qsize() if pending is not None else 0,
                    delayed=delayed.unfinished_tasks if delayed is not None else 0,
                    dead_lettered=len(self.broker.dead_letters_by_queue.get(name, ())),
                    in_flight=max(0, pending.unfinished_tasks - pending.qsize())
                    if pending is not None
                    else 0,
                    oldest_age=0.0 if head is None else age(waiting_since(head), now),
                )
            )
        workers, error = self.workers(now)
        store = self.store.name if self.store is not None else None
        meta = {} if error is None else {"registry_error": error}
        return BrokerSnapshot("stub", tuple(queues), workers, error is None, meta=meta, store=store)

    def ping(self) -> bool:
        return True


def _head(queue: Queue[Any] | None) -> Any:
    """The next message a StubBroker queue hands out (a FIFO ``queue.Queue``), without taking it."""
    if queue is None:
        return None
    with queue.mutex:
        return queue.queue[0] if queue.queue else None
