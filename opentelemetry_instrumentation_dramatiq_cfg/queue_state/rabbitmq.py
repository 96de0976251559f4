"""Queue state of a Dramatiq ``RabbitmqBroker``, read with passive declares on a connection of its own.

Per queue ``Q``: pending = ready messages of ``Q`` (RabbitMQ's ``message_count`` excludes unacked
deliveries, so in flight is unknown: ``None``); delayed = ready messages of ``Q.DQ``;
dead-lettered = ``Q.XQ``; consumers = consumers of ``Q`` (one per worker process consuming it, the
liveness signal on this broker). A passive declare never creates a queue: a missing one (404, which
closes the channel) reads as zeros. The connection is opened for one read and closed after it, with
``timeout`` on the socket, the handshake and blocked connections.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import dq_name, xq_name
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from .base import BrokerReader, BrokerSnapshot, BrokerUnavailable, QueueStats, canonical_queues

#: What connecting and reading may raise. pika's connection workflow raises its own exceptions,
#: outside ``AMQPError``, for some failures: a server that accepts the connection and never completes
#: the handshake raises ``AMQPConnectorStackTimeout``.
_CONNECT_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


class RabbitmqQueueState(BrokerReader):
    """Read-only view of a ``RabbitmqBroker``'s queues."""

    def __init__(self, broker: Any, **timeouts: float) -> None:
        super().__init__(broker, **timeouts)
        parameters = broker.parameters
        self._parameters = [
            self._with_timeouts(p)
            for p in (parameters if isinstance(parameters, list | tuple) else [parameters])
        ]
        first = self._parameters[0]
        self.address = f"{first.host}:{first.port}"

    def __repr__(self) -> str:  # never the parameters: they hold the credentials
        return f"RabbitmqQueueState(address={self.address!r})"

    def _with_timeouts(self, parameters: pika.ConnectionParameters) -> pika.ConnectionParameters:
        parameters = copy.deepcopy(parameters)
        parameters.socket_timeout = self.timeout
        parameters.stack_timeout = self.timeout
        parameters.blocked_connection_timeout = self.timeout
        parameters.connection_attempts = 1
        parameters.retry_delay = 0
        return parameters

    def read(self, queue_names: Iterable[str] | None = None) -> BrokerSnapshot:
        names = canonical_queues(self.broker, queue_names)
        try:
            connection = pika.BlockingConnection(self._parameters)
        except _CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ at {self.address} could not be reached: {exc!r}") from None
        try:
            channel = connection.channel()
            queues = []
            for name in names:
                counts = []
                for queue in (name, dq_name(name), xq_name(name)):
                    try:
                        frame = channel.queue_declare(queue, passive=True)
                        counts.append((frame.method.message_count, frame.method.consumer_count))
                    except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                        counts.append((0, 0))
                        channel = connection.channel()
                (pending, consumers), (delayed, _), (dead, _) = counts
                queues.append(QueueStats(name, pending, delayed, dead, in_flight=None, consumers=consumers))
        except _CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"RabbitMQ at {self.address} could not be read: {exc!r}") from None
        finally:
            with contextlib.suppress(Exception):
                connection.close()
        return BrokerSnapshot("rabbitmq", tuple(queues), (), registry=False)

    def ping(self) -> bool:
        try:
            pika.BlockingConnection(self._parameters).close()
        except Exception:
            return False
        return True
