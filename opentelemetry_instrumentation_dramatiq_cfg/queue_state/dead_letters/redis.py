"""Dead letters of a ``RedisBroker``: the ``ns:Q.XQ`` sorted set (id -> time of death in ms) and the
``ns:Q.XQ.msgs`` hash (id -> payload), as Dramatiq's ``nack`` writes them.

- A page is one Lua script call (one round trip): ``ZREVRANGE`` of the ids, newest first, the total
  (``ZCARD``) and the payloads (``HMGET``).
- A requeue reads the payloads (one ``HMGET``), builds each new message (:func:`..requeued`, a new
  Redis id as ``RedisBroker.enqueue`` gives one) and calls a script that, per message, moves it only
  if ``ZREM`` says it was still in the set: payload into ``ns:Q.msgs``, id onto ``ns:Q`` (what
  Dramatiq's ``enqueue`` command does). A script runs atomically, so two admins, a worker's
  maintenance or a dropped connection cannot move one message twice or lose it: the script either
  ran (the message is in the queue) or did not (it is still dead).
- A delete is the same script shape: ``ZREM``, and ``HDEL`` of the payload only if ``ZREM`` removed it.
Batches of :data:`..BATCH` messages per script call keep each call short.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import uuid4

import redis

from ..base import BrokerUnavailable
from .base import (
    BATCH,
    ActionResult,
    BrokerDeadLetters,
    DeadLetter,
    DeadLetterPage,
    decode,
    in_order,
    requeued,
)

_PAGE = """
local ids = redis.call("zrevrange", KEYS[1], ARGV[1], ARGV[2], "WITHSCORES")
local keys = {}
for i = 1, #ids, 2 do keys[#keys + 1] = ids[i] end
local payloads = {}
if #keys > 0 then payloads = redis.call("hmget", KEYS[2], unpack(keys)) end
return {redis.call("zcard", KEYS[1]), ids, payloads}
"""

# KEYS: dead set, dead payloads, queue payloads, queue list; ARGV: (dead id, new id, new payload)...
_REQUEUE = """
local moved = {}
for i = 1, #ARGV, 3 do
  if redis.call("zrem", KEYS[1], ARGV[i]) == 1 then
    redis.call("hdel", KEYS[2], ARGV[i])
    redis.call("hset", KEYS[3], ARGV[i + 1], ARGV[i + 2])
    redis.call("rpush", KEYS[4], ARGV[i + 1])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
"""

# KEYS: dead set, dead payloads; ARGV: dead ids
_DELETE = """
local deleted = {}
for i = 1, #ARGV do
  if redis.call("zrem", KEYS[1], ARGV[i]) == 1 then
    redis.call("hdel", KEYS[2], ARGV[i])
    deleted[#deleted + 1] = ARGV[i]
  end
end
return deleted
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDeadLetters(BrokerDeadLetters):
    """List, requeue and delete the dead letters of a ``RedisBroker``."""

    def __init__(self, broker: Any, **timeout: float) -> None:
        super().__init__(broker, **timeout)
        self.namespace: str = broker.namespace
        pool = broker.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(socket_timeout=self.timeout, socket_connect_timeout=self.timeout, retry=None)
        self._client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        self.address = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")
        self._page = self._client.register_script(_PAGE)
        self._requeue = self._client.register_script(_REQUEUE)
        self._delete = self._client.register_script(_DELETE)

    def __repr__(self) -> str:  # never the connection kwargs: they hold the password
        return f"RedisDeadLetters(address={self.address!r}, namespace={self.namespace!r})"

    def _keys(self, queue_name: str) -> tuple[str, str, str, str]:
        base = f"{self.namespace}:{self.queue(queue_name)}"
        return f"{base}.XQ", f"{base}.XQ.msgs", f"{base}.msgs", base

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"Redis at {self.address}: could not {what}: {exc}") from None

    def page(self, queue_name: str, offset: int = 0, limit: int = 50) -> DeadLetterPage:
        offset, limit = self.window(offset, limit)
        dead, payloads_key, _, _ = self._keys(queue_name)
        total, ids, payloads = self._call(
            "read the dead letters", self._page, keys=[dead, payloads_key], args=[offset, offset + limit - 1]
        )
        letters = tuple(
            DeadLetter(_text(ids[2 * i]), queue_name, decode(payload), float(ids[2 * i + 1]) / 1000)
            for i, payload in enumerate(payloads)
        )
        return DeadLetterPage(queue_name, int(total), offset, letters)

    def requeue(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        result = ActionResult()
        for batch in self._batches(queue_name, keys):
            result += self._requeue_batch(queue_name, batch)
        return result

    def delete(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult:
        dead, payloads, _, _ = self._keys(queue_name)
        result = ActionResult()
        for batch in self._batches(queue_name, keys):
            deleted = {
                _text(key) for key in self._call("delete", self._delete, keys=[dead, payloads], args=batch)
            }
            result += in_order((key for key in batch if key in deleted), (), batch)
        return result

    def _batches(self, queue_name: str, keys: Iterable[str] | None) -> list[list[str]]:
        dead = self._keys(queue_name)[0]
        if keys is None:  # every message dead now; later deaths are not touched
            keys = [
                _text(key) for key in self._call("read the dead letters", self._client.zrange, dead, 0, -1)
            ]
        unique = list(dict.fromkeys(str(key) for key in keys))
        return [unique[i : i + BATCH] for i in range(0, len(unique), BATCH)]

    def _requeue_batch(self, queue_name: str, batch: Sequence[str]) -> ActionResult:
        dead, payloads_key, queue_payloads, queue = self._keys(queue_name)
        payloads = self._call("read the dead letters", self._client.hmget, payloads_key, batch)
        args: list[str | bytes] = []
        undecodable = []
        for key, payload in zip(batch, payloads, strict=True):
            message = decode(payload)
            if message is None:
                if payload is not None:
                    undecodable.append(key)
                continue
            new_id = str(uuid4())
            args += [key, new_id, requeued(message).copy(options={"redis_message_id": new_id}).encode()]
        moved: set[str] = set()
        if args:
            found = self._call(
                "requeue", self._requeue, keys=[dead, payloads_key, queue_payloads, queue], args=args
            )
            moved = {_text(key) for key in found}
        return in_order((key for key in batch if key in moved), undecodable, batch)


DEAD_LETTERS = RedisDeadLetters
