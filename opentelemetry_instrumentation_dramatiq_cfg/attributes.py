"""The attribute sets the hooks derive from a queue, an actor and a broker, built once and cached.

:class:`~.middleware.OpenTelemetryMiddleware` keeps one :class:`_Queue` per (broker, queue) and one
:class:`_Task` per (actor, queue), so no attribute dict is built per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dramatiq.common import q_name

from . import semconv

if TYPE_CHECKING:
    from dramatiq import Broker

#: Queues whose names and attribute sets are kept (see ``OpenTelemetryMiddleware._queue``).
MAX_CACHED_QUEUES = 1024


@dataclass(frozen=True, slots=True)
class _Queue:
    """What the hooks derive from a broker's queue name, built once per queue instead of per message.

    The dicts are shared by every message of the queue: they are passed to the SDK, never mutated.
    """

    name: str  # without Dramatiq's delay-queue suffix
    excluded: bool
    send_span_name: str
    process_span_name: str
    send_attributes: dict[str, Any]  # of messaging.client.sent.messages
    process_attributes: dict[str, Any]  # of messaging.process.duration and .client.consumed.messages
    # The span attributes a sampler may read: given at span start, the others only if it records.
    # send_start is also the attribute set of messaging.client.operation.duration.
    send_start: dict[str, Any]
    process_start: dict[str, Any]
    label: dict[str, Any]  # the guide's ``queue_name`` label

    @classmethod
    def build(cls, queue_name: str, excluded_queues: frozenset[str], server: dict[str, Any]) -> _Queue:
        name = q_name(queue_name)
        send_attributes = {**_metric_attributes(semconv.OPERATION_SEND, name), **server}
        process_attributes = {**_metric_attributes(semconv.OPERATION_PROCESS, name), **server}
        return cls(
            name=name,
            excluded=name in excluded_queues,
            send_span_name=semconv.span_name(semconv.OPERATION_SEND, name),
            process_span_name=semconv.span_name(semconv.OPERATION_PROCESS, name),
            send_attributes=send_attributes,
            process_attributes=process_attributes,
            send_start={**send_attributes, semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_SEND},
            process_start={
                **process_attributes,
                semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_PROCESS,
            },
            label={semconv.LABEL_QUEUE_NAME: name},
        )


@dataclass(frozen=True, slots=True)
class _Task:
    """The metric attribute sets of one actor on one queue, built once instead of per message."""

    label: dict[str, Any]  # ``task_name``
    by_status: dict[str, dict[str, Any]]  # ``task_name``, ``status`` for each outcome
    with_queue: dict[str, Any]  # ``task_name``, ``queue_name``

    @classmethod
    def build(cls, actor_name: str, queue_name: str) -> _Task:
        label = {semconv.LABEL_TASK_NAME: actor_name}
        return cls(
            label=label,
            by_status={
                outcome: {**label, semconv.LABEL_STATUS: status} for outcome, status in _STATUS.items()
            },
            with_queue={**label, semconv.LABEL_QUEUE_NAME: queue_name},
        )


_STATUS = {
    semconv.OUTCOME_SUCCESS: semconv.STATUS_SUCCESS,
    semconv.OUTCOME_RETRY: semconv.STATUS_RETRY,
    semconv.OUTCOME_FAILED: semconv.STATUS_FAILURE,
    semconv.OUTCOME_HANDLED: semconv.STATUS_FAILURE,
    semconv.OUTCOME_SKIPPED: semconv.STATUS_SKIPPED,
}


def _metric_attributes(operation: str, queue_name: str) -> dict[str, Any]:
    """Attributes shared by spans and the semantic-convention metrics (bounded cardinality)."""
    return {
        semconv.MESSAGING_SYSTEM: semconv.SYSTEM,
        semconv.MESSAGING_OPERATION_NAME: operation,
        semconv.MESSAGING_DESTINATION_NAME: queue_name,
    }


def _server_attributes(broker: Broker) -> dict[str, Any]:
    """server.address/server.port where the broker knows them (Redis, RabbitMQ)."""
    try:
        kwargs = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]  # Redis
        host, port = kwargs.get("host") or kwargs.get("path"), kwargs.get("port")
    except AttributeError:
        try:
            parameters = broker.parameters  # type: ignore[attr-defined]  # RabbitMQ: one, or a list
            if isinstance(parameters, list | tuple):
                parameters = parameters[0]
            host, port = parameters.host, parameters.port
        except (AttributeError, IndexError):
            return {}
    attributes: dict[str, Any] = {}
    if isinstance(host, str):
        attributes[semconv.SERVER_ADDRESS] = host
    if isinstance(port, int):
        attributes[semconv.SERVER_PORT] = port
    return attributes
