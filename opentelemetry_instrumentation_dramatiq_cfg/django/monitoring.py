"""What the admin monitoring page shows, built from one broker read and two bounded SQL queries.

:func:`build_page` asks the health view's :class:`~.service.TaskService` for its answer (so the
status is the one ``/health/`` gives, from the same single read of the broker: one round trip on
Redis whatever the number of queues) and, when the records app is installed, reads the most recent
permanent failures and the slowest attempts of the last :data:`SLOWEST_WINDOW` (``ROWS`` each, one
query each). Nothing here raises for an unreachable broker or database: the error text is shown.

The body rows of the tables are built here with ``format_html`` (every value escaped), as the admin
builds its change-list rows: a template loop over 100 queues costs more than the broker read.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from django.apps import apps
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ..queue_state import QueueStats, WorkerStats, redact
from ..queue_state.base import STALLED
from .busy import BusyRow, busy_rows
from .conf import HealthSettings
from .service import DISABLED, TaskService

if TYPE_CHECKING:
    from .records.models import TaskRecord

RECORDS_APP: Final = "opentelemetry_instrumentation_dramatiq_cfg.django.records"
#: Rows in each of the failures and slowest-attempts tables.
ROWS: Final = 20
#: The slowest attempts are those of this last period.
SLOWEST_WINDOW: Final = timedelta(hours=24)
#: Outcomes that are a permanent failure (what failure hooks receive).
PERMANENT: Final = ("failed", "handled")


def ago(seconds: float) -> str:
    """``seconds`` in the past, in words: ``just now``, ``42 s ago``, ``3 min ago``, ``5 h ago``, ..."""
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


#: Characters of an error message shown in a table cell (the whole text is in its tooltip).
ERROR_CHARS: Final = 160


@dataclass(frozen=True)
class WorkerRow:
    worker: WorkerStats
    last_seen: str

    def html(self) -> SafeString:
        worker = self.worker
        return format_html(
            '<tr><td>{}</td><td class="num">{}</td><td>{}</td><td class="num">{}</td><td>{}</td>'
            '<td><span class="dramatiq-worker {}">{}</span>{}</td></tr>',
            worker.host,
            worker.pid,
            ", ".join(worker.queues),
            worker.threads,
            self.last_seen,
            worker.status,
            worker.status,
            self.state_detail(),
        )

    def state_detail(self) -> str:
        """How long a stalled worker has had every thread busy with none finished."""
        if self.worker.status != STALLED:
            return ""
        return f" for {ago(max(1.0, self.worker.busy_for)).removesuffix(' ago')}"


@dataclass(frozen=True)
class RecordRow:
    record: TaskRecord
    when: str
    trace_url: str | None

    def html(self) -> SafeString:
        record = self.record
        error = (
            format_html(
                "<code>{}</code>: {}",
                record.exception_type,
                Truncator(record.exception_message).chars(ERROR_CHARS),
            )
            if record.exception_type
            else ""
        )
        short = f"{record.trace_id[:12]}…" if record.trace_id else ""
        trace = (
            format_html('<a class="trace-link" href="{}" rel="noreferrer">{}</a>', self.trace_url, short)
            if self.trace_url
            else format_html('<span title="{}">{}</span>', record.trace_id, short)
        )
        return format_html(
            '<tr><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num nowrap">{} s</td>'
            '<td class="nowrap" title="{}">{}</td>'
            '<td class="dramatiq-error" title="{}">{}</td><td>{}</td></tr>',
            record.actor_name,
            record.queue_name,
            record.outcome,
            record.retries,
            f"{record.duration:.3f}",
            record.timestamp.isoformat(),
            self.when,
            record.exception_message,
            error,
            trace,
        )


def _dash(value: int | None) -> int | str:
    return "\N{EN DASH}" if value is None else value


@dataclass
class MonitoringPage:
    """Everything the template shows; ``status`` is the health view's."""

    status: str
    health: dict[str, Any]
    error: str | None = None
    broker: str = ""
    queues: list[QueueStats] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    workers: list[WorkerRow] = field(default_factory=list)
    #: The Busy section: messages in hand (oldest first), how many more, and the arguments column.
    busy: list[BusyRow] = field(default_factory=list)
    busy_more: int = 0
    busy_args: bool = False
    #: Worker liveness comes from the registry (else from RabbitMQ consumer counts).
    registry: bool = True
    #: What the counts include: ``ready+unacked``, or ``ready`` (RabbitMQ without its management API).
    counts: str = ""
    records_installed: bool = False
    records_error: str | None = None
    failures: list[RecordRow] = field(default_factory=list)
    slowest: list[RecordRow] = field(default_factory=list)
    #: Seconds between reloads; ``0`` when auto-refresh is off or paused.
    refresh: float = 0
    refresh_paused: bool = False
    generated_at: datetime = field(default_factory=timezone.now)

    # -- table bodies, for the template ----------------------------------------------------------

    def queue_rows(self) -> SafeString:
        return format_html_join(
            "\n",
            '<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td>'
            '<td class="num"><a href="{}" class="dead-letters-link">{}</a></td>'
            '<td class="num">{}</td><td class="num">{}</td></tr>',
            (
                (
                    q.name,
                    q.pending,
                    q.delayed,
                    reverse("admin:dramatiq_otel_deadletter_queue", args=[q.name]),
                    q.dead_lettered,
                    _dash(q.in_flight),
                    _dash(q.consumers),
                )
                for q in self.queues
            ),
        )

    def worker_rows(self) -> SafeString:
        return SafeString("\n".join(row.html() for row in self.workers))

    def busy_table_rows(self) -> SafeString:
        return SafeString("\n".join(row.html() for row in self.busy))

    def failure_rows(self) -> SafeString:
        return SafeString("\n".join(row.html() for row in self.failures))

    def slowest_rows(self) -> SafeString:
        return SafeString("\n".join(row.html() for row in self.slowest))


def build_page(config: HealthSettings | None = None, *, paused: bool = False) -> MonitoringPage:
    """The page's content: one broker read (through the health view's service), two SQL queries."""
    service = TaskService(config)
    config = service.config
    _, health = service.health(details=False)
    page = MonitoringPage(
        status=health["status"],
        health=health,
        refresh=0 if paused else config.MONITORING_REFRESH,
        refresh_paused=paused and bool(config.MONITORING_REFRESH),
    )
    if page.status != DISABLED:
        _broker_state(page, service, config)
    page.records_installed = apps.is_installed(RECORDS_APP)
    if page.records_installed:
        try:
            # inside a transaction (ATOMIC_REQUESTS), a savepoint keeps a failure here from spoiling it
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                _records(page, config)
        except DatabaseError as exc:  # e.g. the records app installed but not migrated
            page.records_error = redact(f"{type(exc).__name__}: {exc}")
    return page


def _broker_state(page: MonitoringPage, service: TaskService, config: HealthSettings) -> None:
    snapshot = service.snapshot()  # the read health() made, not a second one
    if snapshot is None:
        page.error = service.error
        return
    page.broker = snapshot.broker
    page.registry = snapshot.registry
    page.counts = snapshot.counts
    page.queues = sorted(snapshot.queues, key=lambda queue: (-queue.pending, queue.name))
    page.totals = {
        "pending": snapshot.total_pending,
        "delayed": sum(queue.delayed for queue in snapshot.queues),
        "dead_lettered": sum(queue.dead_lettered for queue in snapshot.queues),
    }
    now = time.time()
    workers = sorted(
        snapshot.workers, key=lambda worker: (worker.status != "active", worker.host, worker.pid)
    )
    page.workers = [WorkerRow(worker, ago(now - worker.last_seen)) for worker in workers]
    page.busy, page.busy_more, page.busy_args = busy_rows(snapshot.workers, config)


def _records(page: MonitoringPage, config: HealthSettings) -> None:
    from .records.models import TaskRecord

    now = timezone.now()

    def rows(records: Any) -> list[RecordRow]:
        return [
            RecordRow(
                record, ago((now - record.timestamp).total_seconds()), config.trace_url(record.trace_id)
            )
            for record in records
        ]

    failures = TaskRecord.objects.filter(outcome__in=PERMANENT).order_by("-timestamp")[:ROWS]
    slowest = TaskRecord.objects.filter(timestamp__gte=now - SLOWEST_WINDOW).order_by("-duration")[:ROWS]
    page.failures = rows(failures)
    page.slowest = rows(slowest)
