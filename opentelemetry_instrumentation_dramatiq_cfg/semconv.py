"""Span names, attribute keys, attribute values and metric names, in one place.

Standard keys come from ``opentelemetry-semantic-conventions`` (messaging conventions, development
status); Dramatiq-specific keys live under ``messaging.dramatiq.*`` as the conventions ask for
system-specific attributes.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_DESTINATION_NAME,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
)
from opentelemetry.semconv._incubating.metrics.messaging_metrics import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT

__all__ = [
    "ERROR_TYPE",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "EXCEPTION_TYPE",
    "MESSAGING_CLIENT_CONSUMED_MESSAGES",
    "MESSAGING_CLIENT_OPERATION_DURATION",
    "MESSAGING_CLIENT_SENT_MESSAGES",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_PROCESS_DURATION",
    "MESSAGING_SYSTEM",
    "SERVER_ADDRESS",
    "SERVER_PORT",
]

#: The semantic-conventions version whose names this package emits, declared by the tracer and every
#: meter. Kept here rather than read from ``opentelemetry.semconv.schemas.Schemas`` because the
#: oldest supported ``opentelemetry-semantic-conventions`` (0.51b0) has no 1.44.0 member; the
#: conformance test checks it against the installed package.
SCHEMA_VERSION: Final = "1.44.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SCHEMA_VERSION}"

SYSTEM: Final = "dramatiq"

OPERATION_SEND: Final = "send"
OPERATION_PROCESS: Final = "process"
OPERATION_TYPE_SEND: Final = MessagingOperationTypeValues.SEND.value
OPERATION_TYPE_PROCESS: Final = MessagingOperationTypeValues.PROCESS.value

# Log event names of exceptions (messaging-exceptions.md), not exported by the semconv package.
EVENT_SEND_EXCEPTION: Final = "messaging.send.exception"
EVENT_PROCESS_EXCEPTION: Final = "messaging.process.exception"

# Dramatiq-specific span attributes.
DRAMATIQ_ACTOR_NAME: Final = "messaging.dramatiq.actor.name"
DRAMATIQ_RETRY_COUNT: Final = "messaging.dramatiq.message.retries"
DRAMATIQ_MAX_RETRIES: Final = "messaging.dramatiq.message.max_retries"
DRAMATIQ_OUTCOME: Final = "messaging.dramatiq.outcome"
DRAMATIQ_DELAY: Final = "messaging.dramatiq.message.delay_ms"
DRAMATIQ_ETA: Final = "messaging.dramatiq.message.eta"
DRAMATIQ_ARGS: Final = "messaging.dramatiq.message.args"
DRAMATIQ_KWARGS: Final = "messaging.dramatiq.message.kwargs"
DRAMATIQ_REENQUEUE: Final = "messaging.dramatiq.reenqueue"
#: Times the message was requeued by hand from its dead letters (process spans; absent when never).
DRAMATIQ_REQUEUES: Final = "messaging.dramatiq.message.requeues"

# Values of messaging.dramatiq.outcome on process spans.
OUTCOME_SUCCESS: Final = "success"
OUTCOME_RETRY: Final = "retry"
OUTCOME_FAILED: Final = "failed"
OUTCOME_HANDLED: Final = "handled"
OUTCOME_SKIPPED: Final = "skipped"

# Values of the `status` label of dramatiq_tasks_total (the guide's series).
STATUS_SUCCESS: Final = "success"
STATUS_FAILURE: Final = "failure"
STATUS_RETRY: Final = "retry"
STATUS_SKIPPED: Final = "skipped"

# The guide's metric names, as the OpenTelemetry Prometheus exporter renders them:
# counter `dramatiq.tasks` -> dramatiq_tasks_total, histogram `dramatiq.task.duration` with unit
# `s` -> dramatiq_task_duration_seconds_*, gauge `dramatiq.queue.depth` -> dramatiq_queue_depth.
METRIC_TASKS: Final = "dramatiq.tasks"
METRIC_TASK_DURATION: Final = "dramatiq.task.duration"
METRIC_QUEUE_DEPTH: Final = "dramatiq.queue.depth"
METRIC_QUEUE_DELAYED: Final = "dramatiq.queue.delayed"
METRIC_QUEUE_DEAD_LETTERED: Final = "dramatiq.queue.dead_lettered"
METRIC_QUEUE_WAIT: Final = "dramatiq.queue.wait.duration"
# UpDownCounter and gauge of counts: not pluralized (naming.md, "Do not pluralize UpDownCounter
# names"); 0.1.x called them dramatiq.worker.messages_in_flight and dramatiq.workers.
METRIC_IN_FLIGHT: Final = "dramatiq.worker.message.active"
METRIC_RETRIES: Final = "dramatiq.retries"
METRIC_DEAD_LETTERED: Final = "dramatiq.dead_lettered"
METRIC_WORKERS: Final = "dramatiq.worker.count"
# Gauge with unit `s` -> dramatiq_queue_oldest_message_age_seconds (Redis, StubBroker).
METRIC_QUEUE_OLDEST_AGE: Final = "dramatiq.queue.oldest_message.age"
# Gauge with unit `s` -> dramatiq_worker_oldest_message_age_seconds: per worker process (registry), the
# age of the oldest message one of its threads holds, 0 when none.
METRIC_WORKER_OLDEST_AGE: Final = "dramatiq.worker.oldest_message.age"

# Metric attribute (Prometheus label) names of the guide's series.
LABEL_TASK_NAME: Final = "task_name"
LABEL_STATUS: Final = "status"
LABEL_QUEUE_NAME: Final = "queue_name"
LABEL_WORKER_STATUS: Final = "status"
LABEL_WORKER_ID: Final = "worker_id"
LABEL_HOST: Final = "host"

# Values of the `status` label of dramatiq_worker_count.
WORKER_ACTIVE: Final = "active"
WORKER_STALE: Final = "stale"
WORKER_STALLED: Final = "stalled"

# Boundaries recommended by the messaging conventions for duration histograms (seconds).
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)


def span_name(operation: str, queue_name: str) -> str:
    """``{operation} {destination}``, as the messaging conventions name spans."""
    return f"{operation} {queue_name}"


def error_type(exception: BaseException) -> str:
    """``error.type`` (and ``exception.type``) of an exception: its fully-qualified class name."""
    cls = type(exception)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
