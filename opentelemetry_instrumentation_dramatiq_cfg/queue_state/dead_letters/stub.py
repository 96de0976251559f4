"""Dead letters of a ``StubBroker`` (tests, the demo): its in-memory ``dead_letters_by_queue`` lists.

Actions take one process-wide lock, so two threads never move one message twice; a requeued message
is put on the queue as ``StubBroker.enqueue`` puts it (without the enqueue hooks, like the other
brokers' requeue).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from .base import ActionResult, BrokerDeadLetters, DeadLetter, DeadLetterPage, in_order, requeued

_lock = threading.Lock()


class StubDeadLetters(BrokerDeadLetters):
    """List, requeue and delete the dead letters of a ``StubBroker``."""

    def __repr__(self) -> str:
        return "StubDeadLetters()"

    def _letters(self, queue_name: str) -> list[Any]:
        letters: list[Any] = self.broker.dead_letters_by_queue[self.queue(queue_name)]
        return letters

    def page(self, queue_name: str, offset: int = 0, limit: int = 50) -> DeadLetterPage:
        offset, limit = self.window(offset, limit)
        with _lock:
            letters = list(reversed(self._letters(queue_name)))
        window = letters[offset : offset + limit]
        return DeadLetterPage(
            queue_name,
            len(letters),
            offset,
            tuple(DeadLetter(proxy.message_id, queue_name, proxy._message) for proxy in window),
        )

    def requeue(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        return self._act(queue_name, keys, requeue=True)

    def delete(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        return self._act(queue_name, keys, requeue=False)

    def _act(self, queue_name: str, keys: Iterable[str] | None, *, requeue: bool) -> ActionResult:
        with _lock:
            letters = self._letters(queue_name)
            wanted = None if keys is None else list(dict.fromkeys(str(key) for key in keys))
            chosen = [p for p in letters if wanted is None or p.message_id in wanted]
            for proxy in chosen:
                letters.remove(proxy)
                if requeue:
                    self.broker.queues[queue_name].put(requeued(proxy._message).encode())
        done = tuple(proxy.message_id for proxy in chosen)
        return in_order(done, (), wanted)


DEAD_LETTERS = StubDeadLetters
