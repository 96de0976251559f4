"""The queues a broker holds, found on the broker itself, for a reader whose broker declared none (one
built from a URL, outside the application that defines the actors). Read-only, time-limited.

- Redis: the keys of the namespace (``SCAN MATCH <ns>:*``): a queue ``Q`` shows as ``<ns>:Q`` (pending
  messages), ``<ns>:Q.msgs``, ``<ns>:Q.DQ``/``.DQ.msgs`` (delayed) and ``<ns>:Q.XQ``/``.XQ.msgs`` (dead
  letters), plus the queues registered workers consume (the worker registry). Redis drops an empty
  key, so a queue with nothing in it and no registered worker consuming it is not found. ``SCAN``
  walks the whole key space, a thousand keys per round trip: past ``timeout`` seconds in all it gives
  up with :class:`BrokerUnavailable` (name the queues instead).
- RabbitMQ: the management HTTP API's queue list, keeping each ``Q`` whose ``Q.DQ`` and ``Q.XQ`` exist
  too (Dramatiq declares the three together, so other applications' queues are left out). AMQP
  cannot list queues: without the API the queues must be named.
- StubBroker: its declared queues.
"""

from __future__ import annotations

import re
import time
from typing import Any

from dramatiq.common import dq_name, q_name, xq_name

from . import _is_a
from .base import BrokerUnavailable, validate_timeout
from .rabbitmq_management import MANAGEMENT_URL_ENV, ManagementAPI
from .registry import decode_record, redis_key

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class QueuesUnknown(ValueError):
    """The broker cannot list its queues (RabbitMQ without its management API): they must be named."""


def discover_queues(broker: Any, *, timeout: float, rabbitmq_management_url: str | None = None) -> list[str]:
    """Sorted canonical names of the queues ``broker`` holds (see the module's docstring)."""
    timeout = validate_timeout(timeout)
    if _is_a(broker, "dramatiq.brokers.redis", "RedisBroker"):
        return _redis_queues(broker, timeout)
    if _is_a(broker, "dramatiq.brokers.rabbitmq", "RabbitmqBroker"):
        return _rabbitmq_queues(broker, timeout, rabbitmq_management_url)
    return sorted({q_name(name) for name in broker.get_declared_queues()})


def _redis_queues(broker: Any, timeout: float) -> list[str]:
    import redis

    namespace: str = broker.namespace
    prefix = f"{namespace}:"
    kwargs = dict(broker.client.connection_pool.connection_kwargs)
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)
    pool = redis.ConnectionPool(connection_class=broker.client.connection_pool.connection_class, **kwargs)
    client = redis.Redis(connection_pool=pool)
    where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}".rstrip(":")
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    try:
        cursor: int = 0
        pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
        while True:
            cursor, keys = client.scan(cursor, match=pattern, count=1000)
            for key in keys:
                name = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(prefix)
                if not name.startswith("__"):  # __heartbeats__, __acks__.*, the worker registry
                    found.add(q_name(name.removesuffix(".msgs")))
            if cursor == 0:
                break
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"Redis at {where}: listing the queues of namespace {namespace!r} took over "
                    f"{timeout:g} s (SCAN of a large key space): name the queues instead"
                )
        for raw in client.hvals(redis_key(namespace)):
            record = decode_record(raw)
            if record is not None:
                found.update(q_name(str(name)) for name in record.get("queues", ()))
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"Redis at {where} could not be read: {exc}") from None
    finally:
        pool.disconnect()
    return sorted(found)


def check_discoverable(broker: Any, *, rabbitmq_management_url: str | None = None) -> None:
    """Raise :class:`QueuesUnknown` unless :func:`discover_queues` can list ``broker``'s queues (no I/O)."""
    if _is_a(broker, "dramatiq.brokers.rabbitmq", "RabbitmqBroker"):
        _management_api(rabbitmq_management_url, 1.0)


def _management_api(management_url: str | None, timeout: float) -> ManagementAPI:
    api = (
        ManagementAPI.from_url(management_url, timeout=timeout)
        if management_url
        else ManagementAPI.from_environment(timeout=timeout)
    )
    if api is None:
        raise QueuesUnknown(
            "RabbitMQ cannot list its queues over AMQP: name them, or give its management API "
            f"(RABBITMQ_MANAGEMENT_URL, or the {MANAGEMENT_URL_ENV} variable)"
        )
    return api


def _rabbitmq_queues(broker: Any, timeout: float, management_url: str | None) -> list[str]:
    api = _management_api(management_url, timeout)
    parameters = broker.parameters
    first = parameters[0] if isinstance(parameters, list | tuple) else parameters
    names = set(api.queues(first.virtual_host))
    return sorted(name for name in names if dq_name(name) in names and xq_name(name) in names)
