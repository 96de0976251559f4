"""Queue state of a Dramatiq ``RedisBroker``, read from Dramatiq's own keys in one round trip.

Per queue ``Q`` of namespace ``ns``: pending = ``LLEN ns:Q``; in flight = ``HLEN ns:Q.msgs`` minus
pending (payloads of messages delivered and not yet acknowledged); delayed = ``HLEN ns:Q.DQ.msgs``
(waiting in the delay queue or held by a worker until due); dead-lettered = ``ZCARD ns:Q.XQ``;
oldest age = now minus the due time (``eta``, else ``message_timestamp``) of the message at the head
of ``ns:Q`` (Dramatiq pushes on the right and fetches from the left), found by a read-only script
(``EVAL_RO``, Redis 7+: the server refuses it any write) that returns one number per queue, not the
payloads; on an older Redis, or a payload that is not JSON, the age is unknown (``None``). Workers
come from the registry hash. Everything is one pipelined round trip, on a connection of its own with
socket timeouts, so a hung Redis costs at most ``timeout`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

import redis

from .base import BrokerReader, BrokerSnapshot, BrokerUnavailable, QueueStats, age, canonical_queues
from .registry_store import STORE_REDIS, RedisStore, decode_hash

#: KEYS: (queue list, queue payload hash) pairs. Returns, per pair, the due time in ms of the list's
#: head message (max of ``message_timestamp`` and ``options.eta``), false for an empty list, -1 when
#: the payload is missing or not JSON. Reads only (EVAL_RO).
_HEAD_DUE_SCRIPT: Final = """
local due = {}
for i = 1, #KEYS, 2 do
  local id = redis.call("lindex", KEYS[i], 0)
  if not id then
    due[#due + 1] = false
  else
    local payload = redis.call("hget", KEYS[i + 1], id)
    local ok, message = pcall(cjson.decode, payload or "")
    if ok and type(message) == "table" then
      local at = tonumber(message.message_timestamp) or -1
      local eta = type(message.options) == "table" and tonumber(message.options.eta) or -1
      due[#due + 1] = math.max(at, eta)
    else
      due[#due + 1] = -1
    end
  end
end
return due
"""


class RedisQueueState(BrokerReader):
    """Read-only view of a ``RedisBroker``'s queues and registered workers."""

    def __init__(self, broker: Any, **timeouts: Any) -> None:
        super().__init__(broker, **timeouts)
        self.namespace: str = broker.namespace
        kwargs = dict(broker.client.connection_pool.connection_kwargs)
        kwargs.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout, retry=None)
        self._pool = redis.ConnectionPool(
            connection_class=broker.client.connection_pool.connection_class, **kwargs
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self.address = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")
        if self.store is not None and self.store.name == STORE_REDIS:  # read with the counts
            self.store = RedisStore(self._client, self.namespace, STORE_REDIS)

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
        same_server = isinstance(self.store, RedisStore) and self.store.name == STORE_REDIS
        if same_server:
            pipe.hgetall(self.store.key)  # type: ignore[union-attr]
        if names:
            keys = [key for name in names for key in (f"{ns}:{name}", f"{ns}:{name}.msgs")]
            pipe.execute_command("EVAL_RO", _HEAD_DUE_SCRIPT, len(keys), *keys)  # type: ignore[no-untyped-call]
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"Redis at {self.address} could not be read: {exc}") from None
        counts = results[: 4 * len(names)]
        registry = results[4 * len(names)] if same_server else {}
        for result in (*counts, registry):
            if isinstance(result, Exception):
                raise BrokerUnavailable(f"Redis at {self.address} could not be read: {result}")
        heads = results[-1] if names and isinstance(results[-1], list) else [None] * len(names)
        now = time.time()
        queues = []
        for index, name in enumerate(names):
            pending, payloads, delayed, dead = counts[4 * index : 4 * index + 4]
            due = heads[index]
            oldest_age = (
                0.0 if not pending else age(due / 1000 if isinstance(due, int) and due >= 0 else None, now)
            )
            in_flight = max(0, payloads - pending)
            queues.append(QueueStats(name, pending, delayed, dead, in_flight, oldest_age=oldest_age))
        meta: dict[str, Any] = {"namespace": ns}
        if same_server:
            workers = self.judge(decode_hash(registry), now)
        else:  # a Redis of its own (registry_redis_url): a store outage leaves the counts readable
            workers, error = self.workers(now)
            if error is not None:
                meta["registry_error"] = error
        store = self.store.name if self.store is not None else None
        registry = "registry_error" not in meta
        return BrokerSnapshot("redis", tuple(queues), workers, registry, meta=meta, store=store)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False
