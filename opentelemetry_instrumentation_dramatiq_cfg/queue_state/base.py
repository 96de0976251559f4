"""The shapes every queue-state reader returns, and what they share. No OpenTelemetry here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

from dramatiq.common import q_name

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
    #: ``active``, or ``stale`` when not seen within the worker timeout.
    status: str

    def asdict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queues"] = list(self.queues)
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

    @property
    def active_workers(self) -> int:
        """Live workers: registry entries seen recently, else the most consumers on any queue."""
        if self.registry:
            return sum(1 for worker in self.workers if worker.status == "active")
        return max((queue.consumers or 0 for queue in self.queues), default=0)

    @property
    def total_pending(self) -> int:
        return sum(queue.pending for queue in self.queues)


class QueueStateReader(Protocol):
    """Reads queue counts and workers of one broker; strictly read-only."""

    timeout: float

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
    ) -> None:
        self.broker = broker
        self.timeout = validate_timeout(timeout)
        self.worker_timeout = worker_timeout

    def worker(self, worker_id: str, record: dict[str, Any], now: float) -> WorkerStats:
        """A registry record as :class:`WorkerStats`, ``stale`` if not seen within the timeout."""
        last_seen = float(record.get("last_seen", 0))
        return WorkerStats(
            worker_id=worker_id,
            host=str(record.get("host", "")),
            pid=int(record.get("pid", 0)),
            queues=tuple(record.get("queues", ())),
            threads=int(record.get("threads", 0)),
            last_seen=last_seen,
            status="active" if now - last_seen <= self.worker_timeout else "stale",
        )


def canonical_queues(broker: Any, queue_names: Iterable[str] | None) -> list[str]:
    """Sorted canonical names: the given ones, or the broker's declared queues."""
    names: Iterable[str] = broker.get_declared_queues() if queue_names is None else queue_names
    return sorted({q_name(name) for name in names})


def validate_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 3600:
        raise ValueError(f"timeout must be a number of seconds in (0, 3600), got {timeout!r}")
    return float(timeout)
