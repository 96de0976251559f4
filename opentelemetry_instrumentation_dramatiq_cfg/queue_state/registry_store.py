"""Where the worker registry keeps its records, and how other modules join its beat.

A store keeps one record (a JSON-able dict) per worker process, keyed by worker id. The registry
(:mod:`.registry`) writes its worker's record once per beat, deletes it on a clean stop and prunes
records unseen for an hour; readers (:mod:`.redis`, :mod:`.rabbitmq`, :mod:`.stub`) read them all.

Stores, and which one is chosen (:func:`store_for_broker`, first match):

1. ``redis-url``: a Redis of your choice, ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL`` (the option
   ``registry_redis_url``, or ``DRAMATIQ_HEALTH["REGISTRY_REDIS_URL"]`` for the health view), beside
   any broker. Hash ``<namespace>:__otel_workers__`` (namespace of a Redis broker, else ``dramatiq``).
2. ``redis``: a ``RedisBroker``'s own Redis, same hash; one pipelined round trip per beat.
3. ``memory``: a ``StubBroker``'s registry, in this process's memory (tests, the demo).
4. a store a factory registered with :func:`register_store_factory` returns: the Django app
   registers ``django-db`` (a table of its own, one upsert per beat), used beside any other broker
   when ``DRAMATIQ_HEALTH["REGISTRY_DATABASE"]`` is true.
5. none: no registry (RabbitMQ without 1 and 4; liveness then comes from consumer counts).

Every store call is guarded by its caller (the registry never raises into Dramatiq) and bounded:
Redis stores use a connection pool of their own with socket timeouts (``timeout``, 2 s).

Extension point: other modules (per-actor statistics, issue #28) write with the same beat, in the
**same round trip**, without the registry knowing what they write. Register a contributor::

    from opentelemetry_instrumentation_dramatiq_cfg.queue_state import registry_store

    def write_statistics(beat: registry_store.Beat) -> None:
        if beat.pipeline is not None:      # a Redis store: queue commands, never execute them
            beat.pipeline.hset(f"{beat.store.prefix}:__otel_actor_stats__", ...)
        elif beat.store.name == "django-db":  # inside the beat's transaction (beat.connection)
            ...
        elif beat.store.name == "memory":   # beat.store.extra: a dict per broker, key your own entry
            ...

    registry_store.add_beat_contributor(write_statistics)

Contributors are called on the beat thread (instrumentation suppressed), once per beat of each
worker process, after the record was queued and before the round trip runs; one that raises is
logged and skipped, the others and the record are still written. A reader gets the chosen store with
:func:`store_for_broker` (or ``reader.store``): ``store.name``, and for Redis stores ``store.client``
(socket timeouts set) and ``store.prefix``; the Django store
(``opentelemetry_instrumentation_dramatiq_cfg.django.registry_store.DjangoStore``) has ``store.using``
(the database alias) and ``store.model`` (``django.models.WorkerRecord``); the memory store has
``store.extra``. A contributor writing to its own Redis keys should use ``f"{beat.store.prefix}:..."``
so that it shares the registry's namespace.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

_logger = logging.getLogger(__name__)

STORE_REDIS: Final = "redis"
STORE_REDIS_URL: Final = "redis-url"
STORE_MEMORY: Final = "memory"
STORE_DJANGO_DB: Final = "django-db"
#: Field of the registry hash in a Redis store (``<prefix>:__otel_workers__``).
REDIS_KEY: Final = "__otel_workers__"
#: The variable naming a Redis for the registry, beside any broker.
REDIS_URL_VARIABLE: Final = "OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL"
#: Seconds a store call may take (socket and connect timeouts of Redis stores).
DEFAULT_STORE_TIMEOUT: Final = 2.0


def decode_record(raw: Any) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class RegistryStore(Protocol):
    """Keeps one record per worker process. Calls may raise (their callers guard them)."""

    #: Which store (``redis``, ``redis-url``, ``memory``, ``django-db``): stated by the health view.
    name: str

    def beat(self, worker_id: str, record: dict[str, Any], now: float) -> None:
        """Write ``record`` and the beat contributors' writes, in one round trip."""
        ...

    def delete(self, worker_id: str) -> None: ...

    def read(self) -> dict[str, dict[str, Any]]:
        """Every record, by worker id (undecodable ones left out)."""
        ...

    def prune(self, before: float) -> None:
        """Delete records whose ``last_seen`` is older than ``before``."""
        ...

    # Optional: ``close_thread()``, called by the beat thread as it ends (per-thread connections).


@dataclass
class Beat:
    """One beat's round trip, as a contributor sees it."""

    store: RegistryStore
    worker_id: str
    #: Wall-clock time of the beat (the record's ``last_seen``).
    now: float
    #: Redis stores: the pipeline the record's ``HSET`` is queued on (``transaction=False``).
    pipeline: Any = None
    #: Django store: the database connection whose transaction the upsert runs in.
    connection: Any = None
    #: Anything else a store hands to contributors.
    extra: dict[str, Any] = field(default_factory=dict)


#: Settings another layer publishes for this process, read when an option or variable does not say:
#: the Django app publishes ``DRAMATIQ_HEALTH``'s ``REGISTRY_REDIS_URL`` (``redis_url``) and
#: ``WORKER_TIMEOUT`` (``worker_timeout``), so workers and gauges running beside it agree with the
#: health view.
published: dict[str, Any] = {}

BeatContributor = Callable[[Beat], None]
_contributors: list[BeatContributor] = []
_factories: list[Callable[[Any], RegistryStore | None]] = []
_lock = threading.Lock()


def add_beat_contributor(contributor: BeatContributor) -> None:
    """Have ``contributor(beat)`` add its writes to every beat's round trip (once per function)."""
    with _lock:
        if contributor not in _contributors:
            _contributors.append(contributor)


def remove_beat_contributor(contributor: BeatContributor) -> None:
    with _lock:
        if contributor in _contributors:
            _contributors.remove(contributor)


def contribute(beat: Beat, around: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
    """Call every contributor with ``beat``; one that raises is logged and skipped. ``around()``
    wraps each call (the Django store: a savepoint, so a failed statement undoes only its own)."""
    for contributor in list(_contributors):
        try:
            if around is None:
                contributor(beat)
            else:
                with around():
                    contributor(beat)
        except Exception:
            _logger.debug("Worker registry: beat contributor %r failed", contributor, exc_info=True)


def register_store_factory(factory: Callable[[Any], RegistryStore | None]) -> None:
    """Offer a store for brokers that have none of their own: ``factory(broker)`` returns a store or
    ``None``. Asked after the Redis URL, the Redis broker's Redis and the StubBroker's memory."""
    with _lock:
        if factory not in _factories:
            _factories.append(factory)


def unregister_store_factory(factory: Callable[[Any], RegistryStore | None]) -> None:
    with _lock:
        if factory in _factories:
            _factories.remove(factory)


class RedisStore:
    """The hash ``<prefix>:__otel_workers__`` on a Redis; one pipelined round trip per beat."""

    def __init__(self, client: Any, prefix: str, name: str = STORE_REDIS) -> None:
        self.client = client
        self.prefix = prefix
        self.name = name
        self.key = f"{prefix}:{REDIS_KEY}"

    @classmethod
    def for_broker(cls, broker: Any, *, timeout: float = DEFAULT_STORE_TIMEOUT) -> RedisStore:
        """A ``RedisBroker``'s own Redis, on a pool of its own with socket timeouts (no retries)."""
        import redis

        pool = broker.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        return cls(client, broker.namespace, STORE_REDIS)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout: float = DEFAULT_STORE_TIMEOUT) -> RedisStore:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)
        return cls(client, prefix, STORE_REDIS_URL)

    def __repr__(self) -> str:  # never the connection kwargs: they hold the password
        return f"RedisStore(name={self.name!r}, key={self.key!r})"

    def beat(self, worker_id: str, record: dict[str, Any], now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key, worker_id, json.dumps(record))
        contribute(Beat(self, worker_id, now, pipeline=pipe))
        results = pipe.execute(raise_on_error=False)
        if isinstance(results[0], Exception):
            raise results[0]

    def delete(self, worker_id: str) -> None:
        self.client.hdel(self.key, worker_id)

    def read(self) -> dict[str, dict[str, Any]]:
        return decode_hash(self.client.hgetall(self.key))

    def prune(self, before: float) -> None:
        old = [
            worker_id
            for worker_id, record in self.read().items()
            if float(record.get("last_seen", 0)) < before
        ]
        if old:
            self.client.hdel(self.key, *old)


def decode_hash(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """The records of an ``HGETALL`` of the registry hash (undecodable ones left out)."""
    records = {}
    for worker_id, value in raw.items():
        record = decode_record(value)
        if record is not None:
            records[worker_id.decode() if isinstance(worker_id, bytes) else str(worker_id)] = record
    return records


#: StubBroker registries (this process only): broker -> worker id -> record.
memory_registry: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()
#: StubBroker data of beat contributors: broker -> their own entries.
memory_extra: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


class MemoryStore:
    """A ``StubBroker``'s registry, in this process's memory."""

    name = STORE_MEMORY

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def __repr__(self) -> str:
        return "MemoryStore()"

    @property
    def extra(self) -> dict[str, Any]:
        """Contributors' data for this broker (each keys its own entry)."""
        return memory_extra.setdefault(self.broker, {})

    def beat(self, worker_id: str, record: dict[str, Any], now: float) -> None:
        memory_registry.setdefault(self.broker, {})[worker_id] = record
        contribute(Beat(self, worker_id, now, extra=self.extra))

    def delete(self, worker_id: str) -> None:
        memory_registry.get(self.broker, {}).pop(worker_id, None)

    def read(self) -> dict[str, dict[str, Any]]:
        return dict(memory_registry.get(self.broker, {}))

    def prune(self, before: float) -> None:
        records = memory_registry.get(self.broker, {})
        for worker_id, record in list(records.items()):
            if float(record.get("last_seen", 0)) < before:
                records.pop(worker_id, None)


def store_for_broker(
    broker: Any, *, redis_url: str | None = None, timeout: float = DEFAULT_STORE_TIMEOUT
) -> RegistryStore | None:
    """The registry store of ``broker`` (see the module docstring for the order), or ``None``.

    ``redis_url`` defaults to ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL``, else the published
    ``redis_url`` (``DRAMATIQ_HEALTH["REGISTRY_REDIS_URL"]``)."""
    url = redis_url if redis_url is not None else os.environ.get(REDIS_URL_VARIABLE, "").strip()
    url = url or published.get("redis_url") or ""
    namespace = getattr(broker, "namespace", None)
    if url:
        prefix = namespace if isinstance(namespace, str) else "dramatiq"
        return RedisStore.from_url(url, prefix, timeout=timeout)
    if isinstance(namespace, str) and hasattr(getattr(broker, "client", None), "connection_pool"):
        return RedisStore.for_broker(broker, timeout=timeout)
    if _is_stub(broker):
        return MemoryStore(broker)
    for factory in list(_factories):
        try:
            store = factory(broker)
        except Exception:
            _logger.debug("Worker registry: store factory %r failed", factory, exc_info=True)
            continue
        if store is not None:
            return store
    return None


def _is_stub(broker: Any) -> bool:
    from dramatiq.brokers.stub import StubBroker

    return isinstance(broker, StubBroker)
