"""Dead letters of a ``RabbitmqBroker``: the ``Q.XQ`` queue, where RabbitMQ dead-letters what a worker
rejects (``x-dead-letter-routing-key``; the ``x-death`` header says when).

A queue cannot be read without taking its messages, so everything here is done the way RabbitMQ's
management UI "Get messages" does it: on a channel of a connection of our own, the messages are
delivered without acknowledgement (``basic.consume`` with no prefetch limit, so they stream in one
go) and every message not acted upon is given back by closing the channel, which requeues unacked
messages at their original position (classic queues, as Dramatiq declares them). A message held by
one channel is delivered to no other, so two admins never hold the same message.

- A page reads the queue (up to the ``message_count`` a passive declare gave) and gives it all back;
  RabbitMQ keeps the oldest first, the page lists the newest first. What another connection holds at
  that moment (another admin's page or action) is not on it: the page is read as it is.
- An action also waits for the messages other connections hold (another admin's page read): the
  count a passive declare gives leaves them out, and they come back to the queue, so to this action's
  consumer, when those connections close. It stops once it holds every message it was asked for, or
  once the queue has no message ready and no consumer but it (it then holds every message of the
  queue: with ``keys=None``, every message dead when it started, perhaps with some that died
  meanwhile). Two actions at once each hold some of the other's messages until they commit: an action
  stops waiting after :data:`HELD_QUIET` seconds with none coming back (:data:`HELD_WAIT` in all),
  acts on what it holds, and its result says ``held_elsewhere``; keys asked for and not found are
  ``missing``.
- A requeue or delete runs in an AMQP transaction (``tx.select``): the new message is published to
  ``Q`` (persistent, its ``broker_priority``, as ``RabbitmqBroker.enqueue`` publishes) and the dead
  one acknowledged, and nothing of it happens until ``tx.commit``. If the connection drops before
  the commit, RabbitMQ discards the publishes and requeues the dead letters: nothing moved. After the
  commit-ok both happened. A requeue first checks that ``Q`` exists (a message published to no queue
  is dropped). Messages are found by their Dramatiq message id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import xq_name

from ..base import BrokerUnavailable
from ..rabbitmq import _CONNECT_ERRORS, RabbitmqQueueState
from .base import (
    ActionResult,
    BrokerDeadLetters,
    DeadLetter,
    DeadLetterPage,
    UnknownQueue,
    decode,
    in_order,
    requeued,
)

#: Seconds without a delivery after which a read stops early (the queue shrank meanwhile).
IDLE = 0.5
#: Seconds apart of the two looks by which an action decides that no one else holds a message.
SETTLE = 0.1
#: An action waits for the messages other connections hold while they keep coming back: it stops
#: after this many seconds without one (two actions holding each other's messages) ...
HELD_QUIET = 2.0
#: ... or after this many seconds in all.
HELD_WAIT = 10.0


class RabbitmqDeadLetters(BrokerDeadLetters):
    """List, requeue and delete the dead letters of a ``RabbitmqBroker``."""

    def __init__(self, broker: Any, **timeout: float) -> None:
        super().__init__(broker, **timeout)
        state = RabbitmqQueueState(broker, timeout=self.timeout)  # its connection parameters
        self._parameters = state._parameters
        self.address = state.address

    def __repr__(self) -> str:  # never the parameters: they hold the credentials
        return f"RabbitmqDeadLetters(address={self.address!r})"

    @contextlib.contextmanager
    def _channel(self, what: str) -> Iterator[Any]:
        try:
            connection = pika.BlockingConnection(self._parameters)
        except _CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ at {self.address} could not be reached: {exc!r}") from None
        try:
            yield connection.channel()
        except _CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ at {self.address}: could not {what}: {exc!r}") from None
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # unacked deliveries go back to the queue, in place

    def _deliveries(self, channel: Any, queue_name: str) -> list[tuple[Any, Any, bytes]]:
        """Every message of the dead-letter queue, delivered to ``channel`` and not acknowledged."""
        try:
            count = channel.queue_declare(xq_name(queue_name), passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:  # 404: no message ever died there
            return []
        found: list[tuple[Any, Any, bytes]] = []
        if count:
            channel.basic_qos(prefetch_count=0)
            for method, properties, body in channel.consume(xq_name(queue_name), inactivity_timeout=IDLE):
                if method is None:  # idle: someone else holds the rest
                    break
                found.append((method, properties, body))
                if len(found) >= count:
                    break
        return found

    def page(self, queue_name: str, offset: int = 0, limit: int = 50) -> DeadLetterPage:
        offset, limit = self.window(offset, limit)
        with self._channel("read the dead letters") as channel:
            deliveries = self._deliveries(channel, self.queue(queue_name))
        newest_first = deliveries[::-1][offset : offset + limit]
        letters = tuple(self._letter(queue_name, properties, body) for _, properties, body in newest_first)
        return DeadLetterPage(queue_name, len(deliveries), offset, letters)

    @staticmethod
    def _letter(queue_name: str, properties: Any, body: bytes) -> DeadLetter:
        message = decode(body)
        died_at = None
        deaths = (properties.headers or {}).get("x-death") or []
        if deaths and isinstance(deaths[0], dict):
            when = deaths[0].get("time")
            if isinstance(when, datetime):  # naive (UTC) before pika 1.4
                died_at = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
            elif isinstance(when, int | float):
                died_at = float(when)
        key = (
            message.message_id
            if message is not None
            else f"undecodable-{hashlib.sha1(body).hexdigest()[:16]}"
        )
        return DeadLetter(key, queue_name, message, died_at)

    @staticmethod
    def _require(channel: Any, queue_name: str) -> None:
        """The queue must exist on the server: RabbitMQ drops a message published to no queue."""
        try:
            channel.queue_declare(queue_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:  # 404
            raise UnknownQueue(
                f"Queue {queue_name!r} does not exist on RabbitMQ (a worker declares it when it starts)"
            ) from None

    def requeue(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        return self._act(queue_name, keys, requeue=True)

    def delete(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        return self._act(queue_name, keys, requeue=False)

    def _act(self, queue_name: str, keys: Iterable[str] | None, *, requeue: bool) -> ActionResult:
        queue_name = self.queue(queue_name)
        wanted = None if keys is None else list(dict.fromkeys(str(key) for key in keys))
        done: list[str] = []
        undecodable: list[str] = []
        with self._channel("requeue" if requeue else "delete") as channel:
            if requeue:
                self._require(channel, queue_name)
            channel.tx_select()
            deliveries, held_elsewhere = _gather(channel, queue_name, wanted)
            for method, properties, body in deliveries:
                letter = self._letter(queue_name, properties, body)
                if wanted is not None and letter.key not in wanted:
                    continue  # given back when the channel closes
                if requeue:
                    if letter.message is None:
                        undecodable.append(letter.key)
                        continue
                    fresh = requeued(letter.message)
                    channel.basic_publish(
                        exchange="",
                        routing_key=queue_name,
                        body=fresh.encode(),
                        properties=pika.BasicProperties(
                            delivery_mode=2, priority=fresh.options.get("broker_priority")
                        ),
                    )
                channel.basic_ack(method.delivery_tag)
                done.append(letter.key)
            channel.tx_commit()
        return dataclasses.replace(in_order(done, undecodable, wanted), held_elsewhere=held_elsewhere)


def _gather(
    channel: Any, queue_name: str, wanted: list[str] | None
) -> tuple[list[tuple[Any, Any, bytes]], bool]:
    """The messages an action acts on, delivered to ``channel`` and not acknowledged: every one in
    the queue (``wanted`` None), or until every ``wanted`` key is found, including those other
    connections held when it started (see the module's docstring); and whether some were still
    held elsewhere when it stopped waiting."""
    queue = xq_name(queue_name)
    try:
        declared = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker:  # 404: no message ever died there
        return [], False
    found: list[tuple[Any, Any, bytes]] = []
    still = set(wanted) if wanted is not None else None
    start = last = time.monotonic()
    alone_since: float | None = None
    channel.basic_qos(prefetch_count=0)
    # A higher priority than the pages' consumers: what a page gives back comes here, not to
    # another page (RabbitMQ's consumer priorities; this consumer has no prefetch limit).
    deliveries = channel.consume(queue, inactivity_timeout=SETTLE, arguments={"x-priority": 1})
    for delivery in deliveries:
        if delivery[0] is not None:
            found.append(delivery)
            last, alone_since = time.monotonic(), None
            if still is not None:
                still.discard(RabbitmqDeadLetters._letter(queue_name, delivery[1], delivery[2]).key)
                if not still:
                    return found, False
            if len(found) < declared.message_count or channel.get_waiting_message_count():
                continue  # more on the way: look again once this burst is in
        now = channel.queue_declare(queue, passive=True).method
        checked = time.monotonic()
        # Nothing ready and no other consumer, twice SETTLE apart with nothing coming in between:
        # no one else holds any (a reader's client cancels its consumer a moment before closing
        # its channel gives its messages back, so one look could fall in between).
        if now.message_count or now.consumer_count > 1:
            alone_since = None
        elif alone_since is None:
            alone_since = checked
        elif checked - alone_since >= SETTLE:
            for _ in range(channel.get_waiting_message_count()):  # delivered before the declare-ok
                delivery = next(deliveries)
                if delivery[0] is not None:
                    found.append(delivery)
            return found, False
        if checked - last >= HELD_QUIET or checked - start >= HELD_WAIT:
            return found, now.consumer_count > 1
    return found, False  # not reached: the generator ends only with the channel


DEAD_LETTERS = RabbitmqDeadLetters
