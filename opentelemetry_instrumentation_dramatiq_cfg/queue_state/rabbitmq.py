"""Queue state of a Dramatiq ``RabbitmqBroker``: from the management HTTP API when it is configured,
else with passive declares on a connection of its own.

With the management API (``management_url``, or ``DRAMATIQ_RABBITMQ_MANAGEMENT_URL``; see
:mod:`.rabbitmq_management`), per queue ``Q``: pending = ready messages of ``Q``; in flight =
unacknowledged messages of ``Q`` (delivered to workers, prefetch included); delayed = ready +
unacknowledged of ``Q.DQ`` (workers hold delayed messages until due); dead-lettered = ready +
unacknowledged of ``Q.XQ``; the snapshot's ``counts`` is ``ready+unacked``. Should the API fail, the
read falls back to the passive declares and says why in ``meta["management_api_error"]``.

Without it (``counts`` = ``ready``): pending = ready messages of ``Q`` (RabbitMQ's ``message_count``
excludes unacked deliveries, so in flight is unknown: ``None``); delayed = ready messages of ``Q.DQ``
only, which misses every delayed message a running worker already holds; dead-lettered = ``Q.XQ``.
Either way consumers = consumers of ``Q`` (one per worker process consuming it, the liveness signal on
this broker). A passive declare never creates a queue: a missing one (404, which closes the channel)
reads as zeros. The connection is opened for one read and closed after it, with ``timeout`` on the
socket, the handshake and blocked connections.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import dq_name, xq_name
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from .base import (
    READY_AND_UNACKED,
    READY_ONLY,
    BrokerReader,
    BrokerSnapshot,
    BrokerUnavailable,
    QueueStats,
    canonical_queues,
)
from .rabbitmq_management import ManagementAPI, ManagementCounts

#: What connecting and reading may raise. pika's connection workflow raises its own exceptions,
#: outside ``AMQPError``, for some failures: a server that accepts the connection and never completes
#: the handshake raises ``AMQPConnectorStackTimeout``.
_CONNECT_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


class RabbitmqQueueState(BrokerReader):
    """Read-only view of a ``RabbitmqBroker``'s queues."""

    def __init__(self, broker: Any, *, management_url: str | None = None, **timeouts: Any) -> None:
        super().__init__(broker, **timeouts)
        parameters = broker.parameters
        self._parameters = [
            self._with_timeouts(p)
            for p in (parameters if isinstance(parameters, list | tuple) else [parameters])
        ]
        first = self._parameters[0]
        self.address = f"{first.host}:{first.port}"
        self._vhost: str = first.virtual_host
        self._management = (
            ManagementAPI.from_url(management_url, timeout=self.timeout)
            if management_url
            else ManagementAPI.from_environment(timeout=self.timeout)
        )

    def __repr__(self) -> str:  # never the parameters nor the management URL's credentials
        management = self._management.base_url if self._management else None
        return f"RabbitmqQueueState(address={self.address!r}, management={management!r})"

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
        if self._management is None:
            snapshot = self._read_ready(names)
        else:
            try:
                snapshot = self._read_management(self._management, names)
            except BrokerUnavailable as exc:  # still answer, with the ready-only counts, and say why
                snapshot = self._read_ready(names)
                snapshot.meta["management_api_error"] = str(exc)
        return self._with_registry(snapshot)

    def _with_registry(self, snapshot: BrokerSnapshot) -> BrokerSnapshot:
        """The snapshot with the workers of the registry store, if there is one and it answers
        (else liveness stays with the consumer counts, and ``meta["registry_error"]`` says why)."""
        if self.store is None:
            return snapshot
        workers, error = self.workers(time.time())
        if error is not None:
            snapshot.meta["registry_error"] = error
            return replace(snapshot, store=self.store.name)
        return replace(snapshot, workers=workers, registry=True, store=self.store.name)

    def _read_management(self, api: ManagementAPI, names: list[str]) -> BrokerSnapshot:
        found = api.queues(self._vhost)
        missing = ManagementCounts()
        queues = []
        for name in names:
            queue, delayed, dead = (found.get(n, missing) for n in (name, dq_name(name), xq_name(name)))
            queues.append(
                QueueStats(
                    name,
                    pending=queue.ready,
                    delayed=delayed.ready + delayed.unacknowledged,
                    dead_lettered=dead.ready + dead.unacknowledged,
                    in_flight=queue.unacknowledged,
                    consumers=queue.consumers,
                )
            )
        meta = {"counts_source": "management_api"}
        return BrokerSnapshot(
            "rabbitmq", tuple(queues), (), registry=False, meta=meta, counts=READY_AND_UNACKED
        )

    def _read_ready(self, names: list[str]) -> BrokerSnapshot:
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
        return BrokerSnapshot("rabbitmq", tuple(queues), (), registry=False, counts=READY_ONLY)

    def ping(self) -> bool:
        try:
            pika.BlockingConnection(self._parameters).close()
        except Exception:
            return False
        return True
