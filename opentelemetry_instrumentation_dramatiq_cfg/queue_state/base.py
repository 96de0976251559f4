"""The shapes every queue-state reader returns, and what they share. No OpenTelemetry here."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

from dramatiq.common import q_name

from .in_hand import MessageInHand, in_hand_of
from .registry_store import RegistryStore, published, store_for_broker

#: Seconds a read may take before it gives up with :class:`BrokerUnavailable`.
DEFAULT_TIMEOUT: Final = 2.0
#: What a snapshot's counts include (:attr:`BrokerSnapshot.counts`). ``ready+unacked``: ``delayed``
#: and ``dead_lettered`` include messages a worker holds unacknowledged, and ``in_flight`` (delivered,
#: not yet acknowledged, prefetch included) is known. ``ready``: only messages not yet delivered to any
#: worker are counted (RabbitMQ without its management API): a delayed message a worker already holds
#: until its eta is missing from ``delayed``, and ``in_flight`` is unknown. ``pending`` is the messages
#: not yet delivered to a worker either way.
READY_AND_UNACKED: Final = "ready+unacked"
READY_ONLY: Final = "ready"
#: Seconds without a registry beat after which a worker is reported ``stale`` (Dramatiq's own
#: heartbeat timeout is 60 s too).
DEFAULT_WORKER_TIMEOUT: Final = 60.0
#: Seconds every thread of a live worker may hold a message with none finished before the worker is
#: reported ``stalled``: Dramatiq's default time limit (10 min) stops a task that runs Python code
#: longer than that, so a worker busy for longer is stuck (e.g. on a call without timeout).
DEFAULT_STALL_TIMEOUT: Final = 600.0

ACTIVE: Final = "active"
STALE: Final = "stale"
STALLED: Final = "stalled"

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")
_PASSWORD_KEYS = re.compile(r"(?i)(password|passwd|pwd)(['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}&]+")


def redact(text: str) -> str:
    """``text`` with the user info of URLs and ``password=...`` values replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)
    return _PASSWORD_KEYS.sub(lambda m: f"{m[1]}{m[2]}***", text)


class BrokerUnavailable(Exception):
    """The broker could not be read within the timeout. The message never contains credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True)
class QueueStats:
    """Counts of one queue (canonical name: never ``.DQ``/``.XQ``)."""

    name: str
    pending: int = 0
    delayed: int = 0
    dead_lettered: int = 0
    #: Delivered to a worker and not yet acknowledged; ``None`` where the broker cannot tell.
    in_flight: int | None = None
    #: Consumers attached to the queue (RabbitMQ); ``None`` where the broker cannot tell.
    consumers: int | None = None
    #: Seconds the oldest pending message has been waiting (0 for an empty queue); ``None`` where the
    #: broker cannot tell without consuming (RabbitMQ).
    oldest_age: float | None = None

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorkerStats:
    """A worker process seen in the registry."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    threads: int
    last_seen: float
    #: ``active``; ``stale`` when not seen within the worker timeout; ``stalled`` when seen but every
    #: thread has held a message with none finished for longer than the stall timeout.
    status: str
    #: Messages its threads are processing now (as of its last beat).
    processing: int = 0
    #: Messages it finished since it started.
    finished: int = 0
    #: Seconds every thread has been busy with none finished (0 when some thread is free).
    busy_for: float = 0.0
    #: The message each busy thread held at its last beat, oldest first (see :mod:`.in_hand`).
    in_hand: tuple[MessageInHand, ...] = ()

    def asdict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queues"] = list(self.queues)
        data["in_hand"] = [message.asdict() for message in self.in_hand]  # never the arguments
        return data


@dataclass(frozen=True)
class BrokerSnapshot:
    """What one read of a broker found."""

    broker: str
    queues: tuple[QueueStats, ...]
    workers: tuple[WorkerStats, ...] = ()
    #: Whether worker liveness comes from the registry (else from consumer counts, or unknown).
    registry: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    #: :data:`READY_AND_UNACKED` or :data:`READY_ONLY`: what the counts include.
    counts: str = READY_AND_UNACKED
    #: Where the worker registry was read from (``redis``, ``redis-url``, ``memory``, ``django-db``;
    #: see :mod:`.registry_store`), ``None`` when this broker has none.
    store: str | None = None

    @property
    def active_workers(self) -> int:
        """Live workers: registry entries seen recently, else the most consumers on any queue."""
        if self.registry:
            return sum(1 for worker in self.workers if worker.status == ACTIVE)
        return max((queue.consumers or 0 for queue in self.queues), default=0)

    @property
    def stalled_workers(self) -> tuple[WorkerStats, ...]:
        return tuple(worker for worker in self.workers if worker.status == STALLED)

    @property
    def total_pending(self) -> int:
        return sum(queue.pending for queue in self.queues)


class QueueStateReader(Protocol):
    """Reads queue counts and workers of one broker; strictly read-only."""

    timeout: float
    #: Seconds without a registry beat before a worker is ``stale``.
    worker_timeout: float
    #: Seconds every thread of a live worker may be busy with none finished before it is ``stalled``.
    stall_timeout: float
    #: Where the worker registry is read from (see :mod:`.registry_store`); ``None``: nowhere.
    store: RegistryStore | None

    def read(self, queue_names: Iterable[str] | None = None) -> BrokerSnapshot:
        """Counts for ``queue_names`` (default: the broker's declared queues); one round trip where
        the broker allows it. Raises :class:`BrokerUnavailable` when it cannot be read in time."""
        ...

    def ping(self) -> bool:
        """Whether the broker answers within the timeout (never raises)."""
        ...


class BrokerReader:
    """What every reader keeps: its broker, its read timeout and the worker staleness timeout."""

    def __init__(
        self,
        broker: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        registry_redis_url: str | None = None,
    ) -> None:
        self.broker = broker
        self.timeout = validate_timeout(timeout)
        self.worker_timeout = worker_timeout
        self.stall_timeout = stall_timeout
        #: Where the worker registry is read from (see :mod:`.registry_store`); ``None``: nowhere.
        self.store: RegistryStore | None = self._store(registry_redis_url)

    def _store(self, redis_url: str | None) -> RegistryStore | None:
        return store_for_broker(self.broker, redis_url=redis_url, timeout=self.timeout)

    def workers(self, now: float) -> tuple[tuple[WorkerStats, ...], str | None]:
        """The registered workers, and why they could not be read (``None`` when they could).

        Raises nothing: a store outage beside the broker leaves the counts readable."""
        if self.store is None:
            return (), None
        try:
            records = self.store.read()
        except Exception as exc:
            return (), redact(f"worker registry ({self.store.name}) could not be read: {exc}")
        return self.judge(records, now), None

    def judge(self, records: dict[str, dict[str, Any]], now: float) -> tuple[WorkerStats, ...]:
        return tuple(self.worker(worker_id, record, now) for worker_id, record in sorted(records.items()))

    def worker(self, worker_id: str, record: dict[str, Any], now: float) -> WorkerStats:
        """A registry record as :class:`WorkerStats`: ``stale`` if not seen within the worker timeout,
        ``stalled`` if every thread has been busy with none finished for longer than the stall one.

        ``busy_for`` is what the record proves: its beat's time (``last_seen``) minus ``busy_since``,
        both taken together by the worker. Not ``now - busy_since``: the record may be a beat old,
        and a message may have finished since, so that would call a worker that keeps finishing
        messages stalled. A stuck worker's next beats prove it, within one beat of the timeout."""
        last_seen = float(record.get("last_seen", 0))
        busy_since = record.get("busy_since")
        busy_for = max(0.0, last_seen - float(busy_since)) if isinstance(busy_since, int | float) else 0.0
        if now - last_seen > self.worker_timeout:
            status = STALE
        elif busy_for > self.stall_timeout:
            status = STALLED
        else:
            status = ACTIVE
        return WorkerStats(
            worker_id=worker_id,
            host=str(record.get("host", "")),
            pid=int(record.get("pid", 0)),
            queues=tuple(record.get("queues", ())),
            threads=int(record.get("threads", 0)),
            last_seen=last_seen,
            status=status,
            processing=int(record.get("processing", 0)),
            finished=int(record.get("finished", 0)),
            busy_for=round(busy_for, 3),
            in_hand=in_hand_of(record),
        )


def worker_timeout(value: float | None = None) -> float:
    """``value``, else the health view's worker timeout published in this process (the Django app
    publishes ``DRAMATIQ_HEALTH["WORKER_TIMEOUT"]``), else ``OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT``,
    else :data:`DEFAULT_WORKER_TIMEOUT`."""
    if value is not None:
        return value
    if "worker_timeout" in published:
        return float(published["worker_timeout"])
    raw = os.environ.get("OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT", "").strip()
    try:
        return float(raw) if raw else DEFAULT_WORKER_TIMEOUT
    except ValueError:
        return DEFAULT_WORKER_TIMEOUT


def waiting_since(payload: Any) -> float | None:
    """When an encoded message became due (its eta, else its timestamp), in seconds; ``None`` if it
    cannot be decoded with Dramatiq's encoder."""
    from dramatiq import Message

    try:
        message = Message.decode(payload)
        eta = message.options.get("eta")
        due = max(int(message.message_timestamp), int(eta) if isinstance(eta, int | float) else 0)
    except Exception:
        return None
    return due / 1000


def age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 3)


def canonical_queues(broker: Any, queue_names: Iterable[str] | None) -> list[str]:
    """Sorted canonical names: the given ones, or the broker's declared queues."""
    names: Iterable[str] = broker.get_declared_queues() if queue_names is None else queue_names
    return sorted({q_name(name) for name in names})


def validate_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 3600:
        raise ValueError(f"timeout must be a number of seconds in (0, 3600), got {timeout!r}")
    return float(timeout)
