"""Queue state of a Dramatiq ``RedisBroker``, read from Dramatiq's own keys in one round trip.

Per queue ``Q`` of namespace ``ns``: pending = ``LLEN ns:Q``; in flight = ``HLEN ns:Q.msgs`` minus
pending (payloads of messages delivered and not yet acknowledged); delayed = ``HLEN ns:Q.DQ.msgs``
(waiting in the delay queue or held by a worker until due); dead-lettered = ``ZCARD ns:Q.XQ``.
Workers come from the registry hash. Everything is one pipelined round trip, on a connection of its
own with socket timeouts, so a hung Redis costs at most ``timeout`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from .base import BrokerReader, BrokerSnapshot, BrokerUnavailable, QueueStats, canonical_queues
from .registry import decode_record, redis_key


class RedisQueueState(BrokerReader):
    """Read-only view of a ``RedisBroker``'s queues and registered workers."""

    def __init__(self, broker: Any, **timeouts: float) -> None:
        super().__init__(broker, **timeouts)
        self.namespace: str = broker.namespace
        kwargs = dict(broker.client.connection_pool.connection_kwargs)
        kwargs.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout, retry=None)
        self._pool = redis.ConnectionPool(
            connection_class=broker.client.connection_pool.connection_class, **kwargs
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self.address = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")

    def __repr__(self) -> str:  # never the connection kwargs: they hold the password
        return f"RedisQueueState(address={self.address!r}, namespace={self.namespace!r})"

    def read(self, queue_names: Iterable[str] | None = None) -> BrokerSnapshot:
        names = canonical_queues(self.broker, queue_names)
        ns = self.namespace
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{ns}:{name}")
            pipe.hlen(f"{ns}:{name}.msgs")
            pipe.hlen(f"{ns}:{name}.DQ.msgs")
            pipe.zcard(f"{ns}:{name}.XQ")
        pipe.hgetall(redis_key(ns))
        try:
            results = pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"Redis at {self.address} could not be read: {exc}") from None
        queues = []
        for index, name in enumerate(names):
            pending, payloads, delayed, dead = results[4 * index : 4 * index + 4]
            queues.append(QueueStats(name, pending, delayed, dead, max(0, payloads - pending)))
        now = time.time()
        workers = []
        for worker_id, raw in sorted(results[-1].items()):
            record = decode_record(raw)
            if record is not None:
                name = worker_id.decode() if isinstance(worker_id, bytes) else str(worker_id)
                workers.append(self.worker(name, record, now))
        return BrokerSnapshot("redis", tuple(queues), tuple(workers), meta={"namespace": ns})

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False
