"""Dead letters of a ``RabbitmqBroker``: the ``Q.XQ`` queue, where RabbitMQ dead-letters what a worker
rejects (``x-dead-letter-routing-key``; the ``x-death`` header says when).

A queue cannot be read without taking its messages, so everything here is done the way RabbitMQ's
management UI "Get messages" does it: on a channel of a connection of our own, the messages are
delivered without acknowledgement (``basic.consume`` with no prefetch limit, so they stream in one
go) and every message not acted upon is given back by closing the channel, which requeues unacked
messages at their original position (classic queues, as Dramatiq declares them). A message held by
one channel is delivered to no other, so two admins never hold the same message.

- A page reads the queue (up to the ``message_count`` a passive declare gave) and gives it all back;
  RabbitMQ keeps the oldest first, the page lists the newest first.
- A requeue or delete runs in an AMQP transaction (``tx.select``): the new message is published to
  ``Q`` (persistent, its ``broker_priority``, as ``RabbitmqBroker.enqueue`` publishes) and the dead
  one acknowledged, and nothing of it happens until ``tx.commit``. If the connection drops before
  the commit, RabbitMQ discards the publishes and requeues the dead letters: nothing moved. After the
  commit-ok both happened. A requeue first checks that ``Q`` exists (a message published to no queue
  is dropped). Messages are found by their Dramatiq message id.
"""

from __future__ import annotations

import contextlib
import hashlib
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
            for method, properties, body in self._deliveries(channel, queue_name):
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
        return in_order(done, undecodable, wanted)


DEAD_LETTERS = RabbitmqDeadLetters
