"""Metric instruments, created once per meter provider and shared by every middleware using it.

Two families are recorded from the same hooks:

* the messaging semantic conventions: ``messaging.client.operation.duration`` (send),
  ``messaging.client.sent.messages``, ``messaging.process.duration``,
  ``messaging.client.consumed.messages``;
* the series of the original monitoring guide, named so that the OpenTelemetry Prometheus exporter
  renders them exactly as the guide wrote them: ``dramatiq_tasks_total{task_name,status}`` and
  ``dramatiq_task_duration_seconds{task_name}``, plus queue wait time, messages in flight, retries
  and dead-lettered messages.

Attributes are actor and queue names only (bounded cardinality), never ids or arguments.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter, get_meter

from . import semconv
from .version import __version__


@dataclass(frozen=True)
class Instruments:
    send_duration: Histogram
    sent_messages: Counter
    process_duration: Histogram
    consumed_messages: Counter
    tasks: Counter
    task_duration: Histogram
    queue_wait: Histogram
    in_flight: UpDownCounter
    retries: Counter
    dead_lettered: Counter


_lock = threading.Lock()
_by_provider: dict[int, tuple[MeterProvider | None, Instruments]] = {}


def instruments_for(meter_provider: MeterProvider | None) -> Instruments:
    """The instruments of ``meter_provider`` (``None``: the global one), created on first use."""
    key = id(meter_provider)
    with _lock:
        cached = _by_provider.get(key)
        if cached is None or cached[0] is not meter_provider:
            cached = (meter_provider, _create(meter_provider))
            _by_provider[key] = cached
        return cached[1]


def _create(meter_provider: MeterProvider | None) -> Instruments:
    meter = get_meter(__name__, __version__, meter_provider)
    buckets = list(semconv.DURATION_BUCKETS)
    return Instruments(
        send_duration=meter.create_histogram(
            semconv.MESSAGING_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of the send operation (enqueue) of a Dramatiq message.",
            explicit_bucket_boundaries_advisory=buckets,
        ),
        sent_messages=meter.create_counter(
            semconv.MESSAGING_CLIENT_SENT_MESSAGES,
            unit="{message}",
            description="Number of messages the producer attempted to send.",
        ),
        process_duration=meter.create_histogram(
            semconv.MESSAGING_PROCESS_DURATION,
            unit="s",
            description="Duration of processing one Dramatiq message, middleware included.",
            explicit_bucket_boundaries_advisory=buckets,
        ),
        consumed_messages=meter.create_counter(
            semconv.MESSAGING_CLIENT_CONSUMED_MESSAGES,
            unit="{message}",
            description="Number of messages delivered to a Dramatiq worker.",
        ),
        tasks=meter.create_counter(
            semconv.METRIC_TASKS,
            unit="",
            description="Tasks processed, by actor and status (success, failure, retry, skipped).",
        ),
        task_duration=meter.create_histogram(
            semconv.METRIC_TASK_DURATION,
            unit="s",
            description="Run time of a task, by actor.",
            explicit_bucket_boundaries_advisory=buckets,
        ),
        queue_wait=meter.create_histogram(
            semconv.METRIC_QUEUE_WAIT,
            unit="s",
            description="Time from a message being due (enqueued, or its eta) to the start of processing.",
            explicit_bucket_boundaries_advisory=buckets,
        ),
        in_flight=meter.create_up_down_counter(
            semconv.METRIC_IN_FLIGHT,
            unit="{message}",
            description="Messages being processed by this worker process.",
        ),
        retries=meter.create_counter(
            semconv.METRIC_RETRIES,
            unit="{retry}",
            description="Failed attempts that will be retried.",
        ),
        dead_lettered=meter.create_counter(
            semconv.METRIC_DEAD_LETTERED,
            unit="{message}",
            description="Messages failed for good and moved to the dead-letter queue.",
        ),
    )
