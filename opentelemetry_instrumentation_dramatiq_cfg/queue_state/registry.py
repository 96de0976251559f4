"""The worker registry: which processes consume messages, written by the workers themselves.

Dramatiq's Redis heartbeats are refreshed by every process that talks to the broker, producers
included, so they cannot tell a web process that only sends tasks from a worker. The registry is
written only from worker hooks: when a ``Worker`` boots (the ``dramatiq`` command's processes, or a
``Worker`` started in code), every ``interval`` seconds while it runs (a daemon thread), and when it
stops. Readers never write it.

Where it lives: on Redis, the hash ``<namespace>:__otel_workers__`` (field: worker id, value: JSON with
host, pid, queues, threads, last_seen); on the StubBroker, this process's memory; on RabbitMQ there
is no store (liveness comes from consumer counts). Cost: one ``HSET`` per worker process every
``interval`` seconds (5 by default), plus an ``HDEL`` of entries unseen for an hour once a minute.

:class:`WorkerRegistryMiddleware` drives it; the OpenTelemetry middleware calls the same two hooks,
so listing both never registers a worker twice (same worker id).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any, Final

import dramatiq

_logger = logging.getLogger(__name__)

#: Seconds between two beats of a running worker.
DEFAULT_INTERVAL: Final = 5.0
#: Registry entries not seen for this long are deleted by the writers.
FORGET_AFTER: Final = 3600.0
REDIS_KEY: Final = "__otel_workers__"

#: StubBroker registries (this process only): broker -> worker id -> record.
memory_registry: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def redis_key(namespace: str) -> str:
    return f"{namespace}:{REDIS_KEY}"


def decode_record(raw: Any) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class WorkerRegistry:
    """Registers one running worker; never raises (a registry outage must not stop a worker)."""

    def __init__(self, broker: Any, worker: Any, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.broker = broker
        self.interval = interval
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(worker):x}"
        # Dramatiq keeps ``Worker(queues=...)`` (the command's ``--queues``) as ``consumer_whitelist``
        queues = getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues()
        self.record: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": sorted(name for name in queues if not name.endswith((".DQ", ".XQ"))),
            "threads": int(getattr(worker, "worker_threads", 0)),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def worker_started(self) -> None:
        self._write()
        self._thread = threading.Thread(target=self._beat, name="dramatiq-worker-registry", daemon=True)
        self._thread.start()

    def worker_stopped(self) -> None:
        self._stop.set()
        try:
            client, namespace = _redis(self.broker)
            if client is not None:
                client.hdel(redis_key(namespace), self.worker_id)
            elif self.broker in memory_registry:
                memory_registry[self.broker].pop(self.worker_id, None)
        except Exception:
            _logger.debug("Worker registry: could not remove %s", self.worker_id, exc_info=True)

    def _beat(self) -> None:
        beats = 0
        while not self._stop.wait(self.interval):
            beats += 1
            self._write(prune=beats % max(1, int(60 / self.interval)) == 0)

    def _write(self, *, prune: bool = True) -> None:
        now = time.time()
        record = {**self.record, "last_seen": now}
        try:
            client, namespace = _redis(self.broker)
            if client is not None:
                key = redis_key(namespace)
                client.hset(key, self.worker_id, json.dumps(record))
                if prune:
                    old = [
                        worker_id
                        for worker_id, raw in client.hgetall(key).items()
                        if (decode_record(raw) or {}).get("last_seen", 0) < now - FORGET_AFTER
                    ]
                    if old:
                        client.hdel(key, *old)
            elif _is_stub(self.broker):
                memory_registry.setdefault(self.broker, {})[self.worker_id] = record
        except Exception:
            _logger.debug("Worker registry: could not write %s", self.worker_id, exc_info=True)


class WorkerRegistryMiddleware(dramatiq.Middleware):  # type: ignore[misc]
    """Keep the worker registry of this broker up to date.

    Parameters:
      interval(float): Seconds between two beats of a running worker (default 5).
    """

    def __init__(self, *, interval: float = DEFAULT_INTERVAL) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self._registries: dict[int, WorkerRegistry] = {}

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        try:
            if id(worker) not in self._registries:
                registry = self._registries[id(worker)] = WorkerRegistry(
                    broker, worker, interval=self.interval
                )
                registry.worker_started()
        except Exception:
            _logger.debug("Worker registry: boot hook failed", exc_info=True)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        registry = self._registries.pop(id(worker), None)
        if registry is not None:
            registry.worker_stopped()


def _redis(broker: Any) -> tuple[Any, str]:
    """(client, namespace) of a RedisBroker, or (None, "")."""
    namespace = getattr(broker, "namespace", None)
    client = getattr(broker, "client", None)
    if isinstance(namespace, str) and client is not None and hasattr(client, "hset"):
        return client, namespace
    return None, ""


def _is_stub(broker: Any) -> bool:
    from dramatiq.brokers.stub import StubBroker

    return isinstance(broker, StubBroker)
