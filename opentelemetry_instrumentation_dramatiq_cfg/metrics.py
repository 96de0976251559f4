"""Metric instruments, created once per meter provider and shared by every middleware using it.

Two families are recorded from the same hooks:

* the messaging semantic conventions: ``messaging.client.operation.duration`` (send),
  ``messaging.client.sent.messages``, ``messaging.process.duration``,
  ``messaging.client.consumed.messages``;
* the series of the original monitoring guide, named so that the OpenTelemetry Prometheus exporter
  renders them exactly as the guide wrote them: ``dramatiq_tasks_total{task_name,status}`` and
  ``dramatiq_task_duration_seconds{task_name}``, plus queue wait time, messages in flight, retries
  and dead-lettered messages.

The ``metrics_set`` option keeps only one family (``guide``: ``dramatiq.tasks`` and
``dramatiq.task.duration``; ``semconv``: the four messaging metrics); the default records both and the
guide-style extras.

Attributes are actor and queue names only (bounded cardinality), never ids or arguments.

Counts are kept in this process by :class:`Tally` and reported through observable instruments: the
exported data (cumulative sums) is the same as with synchronous counters, but counting a message
costs a dict update (~0.3 µs) instead of an SDK ``add`` (~5 µs each, several per message).
Histograms are synchronous SDK instruments.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    Meter,
    MeterProvider,
    Observation,
    get_meter,
    get_meter_provider,
)

from . import semconv
from .config import METRICS_ALL, METRICS_GUIDE, METRICS_SEMCONV, METRICS_SETS
from .queue_state.base import DEFAULT_STALL_TIMEOUT, worker_timeout
from .version import __version__

_logger = logging.getLogger(__name__)


class Tally:
    """Sums per attribute set, kept in this process and observed at collection time.

    Thread-safe. Forked children start from zero (``os.register_at_fork``), so a worker process never
    reports counts its parent made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[tuple[str, Any], ...], int] = {}
        _tallies.add(self)

    def add(self, amount: int, attributes: Mapping[str, Any]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._sums[key] = self._sums.get(key, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sums = list(self._sums.items())
        return [Observation(value, dict(key)) for key, value in sums]

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._sums = {}


_tallies: weakref.WeakSet[Tally] = weakref.WeakSet()


def _forget_parent_counts() -> None:
    for tally in list(_tallies):
        tally._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_counts)


@dataclass(frozen=True)
class Instruments:
    """The per-message instruments of one meter provider; ``None`` where ``metrics_set`` leaves one out."""

    send_duration: Histogram | None
    sent_messages: Tally | None
    process_duration: Histogram | None
    consumed_messages: Tally | None
    tasks: Tally | None
    task_duration: Histogram | None
    queue_wait: Histogram | None
    in_flight: Tally | None
    retries: Tally | None
    dead_lettered: Tally | None


def reader_probe(meter_provider: MeterProvider | None) -> Callable[[], bool] | None:
    """A test, cheap enough for every message, of whether ``meter_provider`` has a metric reader now.

    ``None`` (``meter_provider``: the global one) when it cannot be told: not the SDK's provider (the
    API's proxy before an SDK is set included), or not the SDK internals expected; then record always.

    The SDK's ``MeterProvider`` with no reader, which ``OTEL_METRICS_EXPORTER=none`` sets under
    ``opentelemetry-instrument``, still takes every measurement (several µs per histogram record)
    and nothing reads it. A reader may be added later (``MeterProvider.add_metric_reader``, SDK
    1.44+): the probe reads the SDK's live reader mapping (the private
    ``_measurement_consumer._reader_storages``, replaced on every change), so recording starts with
    the first reader, and that reader misses nothing the SDK would have given it (a reader sees only
    what is recorded after it was added).
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    except ImportError:  # only the API is installed
        return None
    provider = meter_provider if meter_provider is not None else get_meter_provider()
    if not isinstance(provider, SdkMeterProvider):
        return None
    consumer = getattr(provider, "_measurement_consumer", None)
    if not isinstance(getattr(consumer, "_reader_storages", None), Mapping):
        return None

    def has_reader() -> bool:
        return bool(consumer._reader_storages)  # type: ignore[union-attr]

    return has_reader


_lock = threading.Lock()
_by_provider: dict[tuple[int, str], tuple[MeterProvider | None, Instruments]] = {}


def instruments_for(meter_provider: MeterProvider | None, metrics_set: str = METRICS_ALL) -> Instruments:
    """The instruments of ``meter_provider`` (``None``: the global one), created on first use.

    ``metrics_set`` (see :mod:`.config`): ``all``, ``guide`` (``dramatiq.tasks`` and
    ``dramatiq.task.duration`` only) or ``semconv`` (the messaging semantic-convention metrics only).
    """
    if metrics_set not in METRICS_SETS:
        raise ValueError(f"metrics_set must be one of {', '.join(METRICS_SETS)}; got {metrics_set!r}")
    key = (id(meter_provider), metrics_set)
    with _lock:
        cached = _by_provider.get(key)
        if cached is None or cached[0] is not meter_provider:
            cached = (meter_provider, _create(meter_provider, metrics_set))
            _by_provider[key] = cached
        return cached[1]


def _create(meter_provider: MeterProvider | None, metrics_set: str) -> Instruments:
    meter = get_meter(__name__, __version__, meter_provider, schema_url=semconv.SCHEMA_URL)
    buckets = list(semconv.DURATION_BUCKETS)
    semconv_on = metrics_set in (METRICS_ALL, METRICS_SEMCONV)
    guide_on = metrics_set in (METRICS_ALL, METRICS_GUIDE)
    extras_on = metrics_set == METRICS_ALL
    return Instruments(
        send_duration=meter.create_histogram(
            semconv.MESSAGING_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of the send operation (enqueue) of a Dramatiq message.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        if semconv_on
        else None,
        sent_messages=_counter(
            meter,
            semconv.MESSAGING_CLIENT_SENT_MESSAGES,
            unit="{message}",
            description="Number of messages the producer attempted to send.",
        )
        if semconv_on
        else None,
        process_duration=meter.create_histogram(
            semconv.MESSAGING_PROCESS_DURATION,
            unit="s",
            description="Duration of processing one Dramatiq message, middleware included.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        if semconv_on
        else None,
        consumed_messages=_counter(
            meter,
            semconv.MESSAGING_CLIENT_CONSUMED_MESSAGES,
            unit="{message}",
            description="Number of messages delivered to a Dramatiq worker (skipped ones included).",
        )
        if semconv_on
        else None,
        tasks=_counter(
            meter,
            semconv.METRIC_TASKS,
            unit="{task}",
            description="Tasks processed, by actor and status (success, failure, retry, skipped).",
        )
        if guide_on
        else None,
        task_duration=meter.create_histogram(
            semconv.METRIC_TASK_DURATION,
            unit="s",
            description="Run time of a task, by actor.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        if guide_on
        else None,
        queue_wait=meter.create_histogram(
            semconv.METRIC_QUEUE_WAIT,
            unit="s",
            description="Time from a message being due (enqueued, or its eta) to the start of processing.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        if extras_on
        else None,
        in_flight=_counter(
            meter,
            semconv.METRIC_IN_FLIGHT,
            up_down=True,
            unit="{message}",
            description="Messages being processed by this worker process.",
        )
        if extras_on
        else None,
        retries=_counter(
            meter,
            semconv.METRIC_RETRIES,
            unit="{retry}",
            description="Failed attempts that will be retried.",
        )
        if extras_on
        else None,
        dead_lettered=_counter(
            meter,
            semconv.METRIC_DEAD_LETTERED,
            unit="{message}",
            description="Messages failed for good and moved to the dead-letter queue.",
        )
        if extras_on
        else None,
    )


def _counter(meter: Meter, name: str, *, unit: str, description: str, up_down: bool = False) -> Tally:
    tally = Tally()
    create = meter.create_observable_up_down_counter if up_down else meter.create_observable_counter
    create(name, callbacks=[tally.observe], unit=unit, description=description)
    return tally


class QueueGauges:
    """Observable gauges of queue state, read from the brokers by :mod:`.queue_state`.

    ``dramatiq.queue.depth`` (pending), ``dramatiq.queue.delayed``, ``dramatiq.queue.dead_lettered``
    and ``dramatiq.queue.oldest_message.age`` (seconds the oldest pending message has waited, 0 when
    empty; Redis and StubBroker only: RabbitMQ cannot tell without consuming), each with the
    ``queue_name`` attribute, and ``dramatiq.worker.count`` with ``queue_name`` and ``status``
    (``active``/``stale``/``stalled``): the workers consuming each queue, as the health view counts
    them (the worker registry wherever it has a store, see :mod:`.queue_state.registry_store`; else
    consumer counts on RabbitMQ, which have neither ``stale`` nor ``stalled``). ``stalled``: alive,
    every thread busy with no message finished for ``stall_timeout`` seconds (option of the same name,
    default 600); ``stale``: unseen for ``worker_timeout`` seconds, by default the health view's
    (``DRAMATIQ_HEALTH["WORKER_TIMEOUT"]`` where the Django app runs, else 60). A queue nobody
    consumes reports ``active`` 0, so an alert can tell it from an unread broker.

    One collection reads each watched broker once (one round trip for all its queues and the worker
    registry on Redis) and the snapshot is reused for ``min_interval`` seconds, however
    often the exporter collects. A broker that cannot be read reports nothing (no series), never zero,
    and the callback never raises.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        min_interval: float,
        timeout: float,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        worker_timeout: float | None = None,
    ) -> None:
        self.min_interval = min_interval
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        #: ``None``: the health view's (published by the Django app), else 60 s.
        self.worker_timeout = worker_timeout
        #: The registry's Redis beside the broker (``None``: the variable, else the usual choice).
        self.registry_redis_url: str | None = None
        self._lock = threading.Lock()
        self._readers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._read_at = -math.inf
        self._snapshot: dict[str, list[Observation]] = {}
        meter = get_meter(__name__, __version__, meter_provider, schema_url=semconv.SCHEMA_URL)
        for name, description in (
            (semconv.METRIC_QUEUE_DEPTH, "Messages waiting in a queue (pending, not yet delivered)."),
            (
                semconv.METRIC_QUEUE_DELAYED,
                "Delayed messages (retries and eta) of a queue, waiting or held by a worker until due; "
                "on RabbitMQ without DRAMATIQ_RABBITMQ_MANAGEMENT_URL ready ones only (held ones missed).",
            ),
            (semconv.METRIC_QUEUE_DEAD_LETTERED, "Messages in a queue's dead-letter queue."),
            (
                semconv.METRIC_WORKERS,
                "Worker processes consuming a queue, by status (active, stale, stalled).",
            ),
            (semconv.METRIC_QUEUE_OLDEST_AGE, "Seconds the oldest pending message of a queue has waited."),
            (
                semconv.METRIC_WORKER_OLDEST_AGE,
                "Seconds the oldest message a worker process's threads hold has been in hand "
                "(0 when idle), as of its last registry beat.",
            ),
        ):
            unit = _GAUGE_UNITS.get(name, "{message}")
            meter.create_observable_gauge(
                name, callbacks=[self._callback(name)], unit=unit, description=description
            )

    def watch(self, broker: Any) -> None:
        """Report the queues of ``broker`` (kept by weak reference)."""
        with self._lock:
            if broker not in self._readers:
                self._readers[broker] = None  # the reader is built on first collection

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return self._observations().get(name, [])
            except Exception:
                _logger.debug("Queue gauges: collection failed", exc_info=True)
                return []

        return observe

    def _observations(self) -> dict[str, list[Observation]]:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at < self.min_interval:
                return self._snapshot
            snapshot: dict[str, list[Observation]] = {}
            for broker in list(self._readers.keys()):
                queues, workers, in_hand = self._read(broker)
                snapshot.setdefault(semconv.METRIC_WORKERS, []).extend(workers)
                snapshot.setdefault(semconv.METRIC_WORKER_OLDEST_AGE, []).extend(in_hand)
                for queue in queues:
                    attributes = {semconv.LABEL_QUEUE_NAME: queue.name}
                    for metric, value in (
                        (semconv.METRIC_QUEUE_DEPTH, queue.pending),
                        (semconv.METRIC_QUEUE_DELAYED, queue.delayed),
                        (semconv.METRIC_QUEUE_DEAD_LETTERED, queue.dead_lettered),
                        (semconv.METRIC_QUEUE_OLDEST_AGE, queue.oldest_age),
                    ):
                        if value is not None:
                            snapshot.setdefault(metric, []).append(Observation(value, attributes))
            self._snapshot, self._read_at = snapshot, now
            return snapshot

    def _read(self, broker: Any) -> tuple[list[Any], list[Observation], list[Observation]]:
        from .queue_state import reader_for_broker

        try:
            reader = self._readers.get(broker)
            if reader is None:
                reader = self._readers[broker] = reader_for_broker(
                    broker, timeout=self.timeout, registry_redis_url=self.registry_redis_url
                )
            reader.stall_timeout = self.stall_timeout
            reader.worker_timeout = worker_timeout(self.worker_timeout)
            snapshot = reader.read()
        except Exception as exc:  # unreadable broker: no series rather than a misleading zero
            _logger.debug("Queue gauges: cannot read %s: %s", type(broker).__name__, exc)
            return [], [], []
        return list(snapshot.queues), _worker_observations(snapshot), _in_hand_observations(snapshot)


_GAUGE_UNITS = {
    semconv.METRIC_WORKERS: "{worker}",
    semconv.METRIC_QUEUE_OLDEST_AGE: "s",
    semconv.METRIC_WORKER_OLDEST_AGE: "s",
}
_WORKER_STATUSES = (semconv.WORKER_ACTIVE, semconv.WORKER_STALE, semconv.WORKER_STALLED)


def _worker_observations(snapshot: Any) -> list[Observation]:
    """Workers per queue and status: registry entries listing the queue, else the queue's consumers."""
    observations = []
    for queue in snapshot.queues:
        if snapshot.registry:
            statuses = [worker.status for worker in snapshot.workers if queue.name in worker.queues]
            counts = {status: statuses.count(status) for status in _WORKER_STATUSES}
        elif queue.consumers is not None:
            counts = {semconv.WORKER_ACTIVE: queue.consumers}
        else:
            continue
        for status, count in counts.items():
            attributes = {semconv.LABEL_QUEUE_NAME: queue.name, semconv.LABEL_WORKER_STATUS: status}
            observations.append(Observation(count, attributes))
    return observations


def _in_hand_observations(snapshot: Any) -> list[Observation]:
    """Per live registered worker process: seconds its oldest message in hand had been held at its
    last beat (0 when idle). Stale workers report nothing (their record proves nothing now)."""
    if not snapshot.registry:
        return []
    return [
        Observation(
            max((message.running_for for message in worker.in_hand), default=0.0),
            {semconv.LABEL_WORKER_ID: worker.worker_id, semconv.LABEL_HOST: worker.host},
        )
        for worker in snapshot.workers
        if worker.status != semconv.WORKER_STALE
    ]


_gauges_lock = threading.Lock()
_gauges: dict[int, tuple[MeterProvider | None, QueueGauges]] = {}


def queue_gauges_for(
    meter_provider: MeterProvider | None,
    min_interval: float,
    timeout: float,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    worker_timeout: float | None = None,
) -> QueueGauges:
    """The queue gauges of ``meter_provider``, registered once per provider."""
    with _gauges_lock:
        cached = _gauges.get(id(meter_provider))
        if cached is None or cached[0] is not meter_provider:
            cached = (meter_provider, QueueGauges(meter_provider, min_interval, timeout))
            _gauges[id(meter_provider)] = cached
        gauges = cached[1]
        gauges.min_interval = min(gauges.min_interval, min_interval)
        gauges.stall_timeout = stall_timeout
        gauges.worker_timeout = worker_timeout
        return gauges
