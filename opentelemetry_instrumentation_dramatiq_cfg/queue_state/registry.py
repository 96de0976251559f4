"""The worker registry: which processes consume messages, written by the workers themselves.

Dramatiq's Redis heartbeats are refreshed by every process that talks to the broker, producers
included, so they cannot tell a web process that only sends tasks from a worker. The registry is
written only from worker hooks: when a ``Worker`` boots (the ``dramatiq`` command's processes, or a
``Worker`` started in code), every ``interval`` seconds while it runs (a daemon thread), and when it
stops. Readers never write it.

Where it lives: on Redis, the hash ``<namespace>:__otel_workers__`` (field: worker id, value: JSON with
host, pid, queues, threads, last_seen and the progress fields below); on the StubBroker, this
process's memory; on RabbitMQ there is no store (liveness comes from consumer counts, and a stalled
worker cannot be told). Cost: one ``HSET`` per worker process every ``interval`` seconds (5 by
default), plus an ``HDEL`` of entries unseen for an hour once a minute.

:class:`WorkerRegistryMiddleware` drives it; the OpenTelemetry middleware calls the same hooks,
so listing both never registers a worker twice (same worker id). Its ``worker_id()`` tells a worker
thread which worker it works for (the OpenTelemetry middleware's ``messaging.client.id``).

Progress: a worker that beats is alive, not necessarily working. Each record also carries
``processing`` (messages between ``before_process_message`` and their after-hook in that worker),
``finished`` (messages it finished since it started) and ``busy_since`` (wall-clock time since when
*every* worker thread has held a message with none finished, ``null`` otherwise). Readers call a
worker ``stalled`` once ``busy_since`` is older than their stall timeout (see
:data:`~.base.DEFAULT_STALL_TIMEOUT`): every thread stuck, e.g. on a call without timeout. A worker
whose threads are partly idle, or that finishes messages, is never stalled. Counting costs a few
dict operations per message (no lock, no broker call); the record is written by the beat, so a stall
shows within one ``interval`` of the stall timeout and clears within one ``interval`` of the next
finished message.

In hand: each record also lists, per busy worker thread, the message it holds (``in_hand``, see
:mod:`.in_hand`), filled by the same hooks and written by the same beat.
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

from .in_hand import InHand

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


class Progress:
    """Messages in the hands of one worker's threads, and since when they have all been busy.

    Lock-free: each worker thread writes only its own entries (a dict item set or popped is atomic
    in CPython), and the beat reads copies.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        #: thread ident -> when the message it holds started
        self._started: dict[int, float] = {}
        #: thread ident -> messages it finished
        self._finished: dict[int, int] = {}

    def started(self, ident: int) -> None:
        self._started[ident] = time.time()

    def ended(self, ident: int) -> None:
        self._started.pop(ident, None)
        self._finished[ident] = self._finished.get(ident, 0) + 1

    def fields(self) -> dict[str, Any]:
        """``processing``, ``finished`` and ``busy_since``: every thread has been busy, with none
        finished, since the latest of their current messages started."""
        started = self._started.copy()
        busy_since = max(started.values()) if len(started) >= self.threads else None
        return {
            "processing": len(started),
            "finished": sum(self._finished.copy().values()),
            "busy_since": busy_since,
        }


class WorkerRegistry:
    """Registers one running worker; never raises (a registry outage must not stop a worker)."""

    def __init__(self, broker: Any, worker: Any, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.broker = broker
        self.interval = interval
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(worker):x}"
        # Worker(queues=...) / `dramatiq --queues` keep the subset as consumer_whitelist (None: all).
        queues = getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues()
        self.record: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": sorted(name for name in queues if not name.endswith((".DQ", ".XQ"))),
            "threads": int(getattr(worker, "worker_threads", 0)),
        }
        self.progress = Progress(self.record["threads"])
        self.in_hand = InHand(broker, worker)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def worker_started(self) -> None:
        if self._thread is not None:
            return
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
        record = {
            **self.record,
            **self.progress.fields(),
            "in_hand": self.in_hand.entries(),
            "last_seen": now,
        }
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
        #: id of a worker's work queue -> its progress. Message hooks do not name the worker, but each
        #: worker thread keeps its worker's ``work_queue``; mapped before the threads start, as a
        #: thread may take a message before ``after_worker_boot``.
        self._progress: dict[int, Progress] = {}
        #: thread ident -> its worker's progress (``None``: not a worker thread), filled on first use.
        self._by_thread: dict[int, Progress | None] = {}
        #: thread ident -> (since, message, process span or None): the message each worker thread
        #: holds, shared by this middleware's workers (see :mod:`.in_hand`).
        self.in_hand: dict[int, tuple[float, Any, Any]] = {}
        #: Characters of arguments the records may carry; ``None`` (default): none.
        self.args_limit: int | None = None
        #: The same two maps for :meth:`worker_id`: work queue id -> worker id; thread ident -> it.
        self._ids: dict[int, str] = {}
        self._id_by_thread: dict[int, str | None] = {}

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        try:
            if id(worker) not in self._registries:
                registry = self._registries[id(worker)] = WorkerRegistry(
                    broker, worker, interval=self.interval
                )
                self._progress[id(worker.work_queue)] = registry.progress
                registry.in_hand.held, registry.in_hand.args_limit = self.in_hand, self.args_limit
                self._ids[id(worker.work_queue)] = registry.worker_id
                self._by_thread.clear()
                self._id_by_thread.clear()
        except Exception:
            _logger.debug("Worker registry: boot hook failed", exc_info=True)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.before_worker_boot(broker, worker)  # a no-op unless that hook was missed
        registry = self._registries.get(id(worker))
        if registry is not None:
            registry.worker_started()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        registry = self._registries.pop(id(worker), None)
        if registry is not None:
            registry.worker_stopped()
            self._progress.pop(id(getattr(worker, "work_queue", None)), None)
            self._ids.pop(id(getattr(worker, "work_queue", None)), None)
            self._by_thread.clear()  # thread idents are reused once threads end
            self._id_by_thread.clear()

    def before_process_message(self, broker: Any, message: Any, span: Any = None) -> None:
        """``span``: the OpenTelemetry middleware's process span, kept for the in-hand trace id."""
        ident = threading.get_ident()
        progress = self._by_thread[ident] if ident in self._by_thread else self._thread_progress(ident)
        if progress is not None:
            progress.started(ident)
            self.in_hand[ident] = (time.time(), message, span)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        ident = threading.get_ident()
        progress = self._by_thread[ident] if ident in self._by_thread else self._thread_progress(ident)
        if progress is not None:
            progress.ended(ident)
            self.in_hand.pop(ident, None)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self.after_process_message(broker, message)

    def worker_id(self) -> str | None:
        """The registry's id of the worker whose thread calls it (``None``: not a worker thread, or
        no worker in this process), cached per thread: one dict lookup."""
        ident = threading.get_ident()
        if ident in self._id_by_thread:
            return self._id_by_thread[ident]
        if not self._ids:  # no worker here (a web process): nothing to cache
            return None
        found = self._ids.get(id(getattr(threading.current_thread(), "work_queue", None)))
        self._id_by_thread[ident] = found
        return found

    def _thread_progress(self, ident: int) -> Progress | None:
        """The progress of the worker this thread works for (``None``: not a worker thread), cached."""
        progress = self._progress.get(id(getattr(threading.current_thread(), "work_queue", None)))
        self._by_thread[ident] = progress
        return progress


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
