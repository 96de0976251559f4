"""The worker registry: which processes consume messages, written by the workers themselves.

Dramatiq's Redis heartbeats are refreshed by every process that talks to the broker, producers
included, so they cannot tell a web process that only sends tasks from a worker. The registry is
written only from worker hooks: when a ``Worker`` boots (the ``dramatiq`` command's processes, or a
``Worker`` started in code), every ``interval`` seconds while it runs (a daemon thread), and when it
stops. Readers never write it.

Where it lives: a store (see :mod:`.registry_store`): the Redis broker's own Redis, a Redis named by
``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL`` beside any broker, the Django database when the Django
app is installed, or the StubBroker's memory; with none (RabbitMQ alone) liveness comes from
consumer counts and a stalled worker cannot be told. One record per worker process: host, pid,
queues, threads, ``last_seen``, ``interval`` and the progress fields below. Cost: one write per worker
process per beat (``interval`` seconds: 5, or half the stall timeout when shorter), plus a prune of
entries unseen for an hour once a minute.

Worker ids are ``host:pid:<16 random hex digits>``, drawn once per ``Worker`` object from the OS's
random source: unique even across containers that share a hostname and a pid.
:class:`WorkerRegistryMiddleware` drives it; the OpenTelemetry middleware calls the same hooks, so
listing both never registers a worker twice (one id per ``Worker`` object). Its ``worker_id()`` tells
a worker thread which worker it works for (the OpenTelemetry middleware's ``messaging.client.id``).

Progress: a worker that beats is alive, not necessarily working. Each record also carries
``processing`` (messages between ``before_process_message`` and their after-hook in that worker),
``finished`` (messages it finished since it started) and ``busy_since`` (wall-clock time since when
*every* worker thread has held a message with none finished, ``null`` otherwise). Readers call a
worker ``stalled`` once ``last_seen - busy_since`` (both taken by the same beat: what the record
proves, however old it is when read) exceeds their stall timeout (see
:data:`~.base.DEFAULT_STALL_TIMEOUT`): every thread stuck, e.g. on a call without timeout. A worker
whose threads are partly idle, or that finishes messages (however slowly: each finish moves
``busy_since`` past it), is never stalled. Counting costs a few dict operations per message (no
lock, no broker call); the record is written by the beat, so a stall shows within one ``interval``
of the stall timeout and clears within one ``interval`` of the next finished message. A stall
timeout shorter than two beats is refused (:func:`beat_interval`).

In hand: each record also lists, per busy worker thread, the message it holds (``in_hand``, see
:mod:`.in_hand`), filled by the same hooks and written by the same beat.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import weakref
from typing import Any, Final

import dramatiq

from .in_hand import InHand
from .registry_store import (
    REDIS_KEY,
    RegistryStore,
    decode_record,
    memory_registry,
    store_for_broker,
)

_logger = logging.getLogger(__name__)

#: Seconds between two beats of a running worker, unless the stall timeout asks for more often.
DEFAULT_INTERVAL: Final = 5.0
#: The variable setting the beat interval (``registry_interval`` of the instrumentation).
INTERVAL_VARIABLE: Final = "OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL"
#: Registry entries not seen for this long are deleted by the writers.
FORGET_AFTER: Final = 3600.0

__all__ = [
    "DEFAULT_INTERVAL",
    "FORGET_AFTER",
    "REDIS_KEY",
    "Progress",
    "WorkerRegistry",
    "WorkerRegistryMiddleware",
    "beat_interval",
    "decode_record",
    "memory_registry",
    "new_worker_id",
    "redis_key",
]


def redis_key(namespace: str) -> str:
    return f"{namespace}:{REDIS_KEY}"


_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_ids_lock = threading.Lock()


def worker_id_of(worker: Any) -> str:
    """The registry id of ``worker``: one per ``Worker`` object, whichever middleware asks."""
    with _ids_lock:
        try:
            return _ids.setdefault(worker, new_worker_id())
        except TypeError:  # not weakly referenceable
            return new_worker_id()


def new_worker_id() -> str:
    """``host:pid:random``: readable, and unique by construction (64 random bits from the OS, so two
    containers with the same hostname and pid, even with address-space randomisation off, differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def beat_interval(stall_timeout: float, interval: float | None = None) -> float:
    """The registry's beat interval for ``stall_timeout``: ``interval`` if given (a stall timeout
    shorter than two beats raises :class:`ValueError`), else 5 s, or half the stall timeout when
    that is shorter, so a stall always shows within one beat of the timeout."""
    if interval is None:
        return DEFAULT_INTERVAL if stall_timeout <= 0 else min(DEFAULT_INTERVAL, stall_timeout / 2)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < 3600:
        raise ValueError(f"registry_interval must be a number of seconds in (0, 3600), got {interval!r}")
    if stall_timeout < 2 * interval:
        raise ValueError(
            f"stall_timeout ({stall_timeout:g} s) must be at least two registry beats "
            f"(2 x registry_interval = {2 * interval:g} s): a record is up to one beat old, so a shorter "
            "stall timeout cannot be judged; raise the stall timeout or lower registry_interval"
        )
    return float(interval)


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

    def __init__(
        self,
        broker: Any,
        worker: Any,
        *,
        interval: float = DEFAULT_INTERVAL,
        redis_url: str | None = None,
    ) -> None:
        self.broker = broker
        self.interval = interval
        self.worker_id = worker_id_of(worker)
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
        self._redis_url = redis_url
        self._store: RegistryStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> RegistryStore | None:
        """The store this worker writes to, chosen on first use (``None``: no store for this broker)."""
        if self._store is None:
            self._store = store_for_broker(self.broker, redis_url=self._redis_url)
        return self._store

    def worker_started(self) -> None:
        if self._thread is not None:
            return
        self._write()
        self._thread = threading.Thread(target=self._beat, name="dramatiq-worker-registry", daemon=True)
        self._thread.start()

    def worker_stopped(self) -> None:
        self._stop.set()
        try:
            store = self.store
            if store is not None:
                store.delete(self.worker_id)
        except Exception:
            _logger.debug("Worker registry: could not remove %s", self.worker_id, exc_info=True)

    def _beat(self) -> None:
        beats = 0
        try:
            while not self._stop.wait(self.interval):
                beats += 1
                self._write(prune=beats % max(1, int(60 / self.interval)) == 0)
        finally:  # e.g. the Django store's connection of this thread
            close = getattr(self._store, "close_thread", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _logger.debug("Worker registry: could not close the store", exc_info=True)

    def _write(self, *, prune: bool = True) -> None:
        """One beat: the record, with ``last_seen`` the time its progress fields were taken at (the
        readers judge a stall on ``last_seen - busy_since``: what the record itself proves)."""
        progress = self.progress.fields()
        in_hand = self.in_hand.entries()
        now = time.time()  # after the progress: busy_since <= last_seen
        record = {**self.record, **progress, "in_hand": in_hand, "last_seen": now, "interval": self.interval}
        try:
            store = self.store
            if store is None:
                return
            store.beat(self.worker_id, record, now)
            if prune:
                store.prune(now - FORGET_AFTER)
        except Exception:
            _logger.debug("Worker registry: could not write %s", self.worker_id, exc_info=True)


class WorkerRegistryMiddleware(dramatiq.Middleware):  # type: ignore[misc]
    """Keep the worker registry of this broker up to date.

    Parameters:
      interval(float): Seconds between two beats of a running worker (default:
        ``OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL``, else 5).
      redis_url(str): A Redis for the registry beside any broker (default:
        ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL``; see :mod:`.registry_store` for the choice).
    """

    def __init__(self, *, interval: float | None = None, redis_url: str | None = None) -> None:
        if interval is None:
            raw = os.environ.get(INTERVAL_VARIABLE, "").strip()
            try:
                interval = float(raw) if raw else DEFAULT_INTERVAL
            except ValueError:
                raise ValueError(f"{INTERVAL_VARIABLE} must be a number of seconds, got {raw!r}") from None
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.redis_url = redis_url
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
                    broker, worker, interval=self.interval, redis_url=self.redis_url
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
