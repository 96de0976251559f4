"""Every span and metric point of a mixed workload, checked against the messaging semantic conventions.

Names, units and instrument kinds are read from the installed ``opentelemetry-semantic-conventions``
(attribute constants, ``create_messaging_*`` metric factories, ``Schemas``), never copied. The
package has no requirement levels, so those are transcribed here from semantic-conventions v1.44.0
(model/messaging/metrics.yaml, model/messaging/common.yaml, docs/messaging/messaging-spans.md,
docs/general/recording-errors.md), each attribute named by its package constant.

The workload covers a success, a retry then success, retries then a final failure, a `throws`
exception, a skip (AgeLimit), a delayed message and a time limit, on Stub, Redis and RabbitMQ.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import AgeLimit, TimeLimit
from opentelemetry.sdk.metrics.export import Histogram, Sum
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_CLIENT_ID,
    MESSAGING_CONSUMER_GROUP_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_DESTINATION_SUBSCRIPTION_NAME,
    MESSAGING_DESTINATION_TEMPLATE,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    MessagingOperationTypeValues,
)
from opentelemetry.semconv._incubating.metrics import messaging_metrics
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanKind, StatusCode

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import memory_registry, redis_key

from .conftest import server_attributes, wait_processed

SEND = MessagingOperationTypeValues.SEND.value
PROCESS = MessagingOperationTypeValues.PROCESS.value


@dataclass(frozen=True)
class Convention:
    """A semantic-convention metric as the package defines it, plus its attribute rules (v1.44.0)."""

    name: str
    unit: str
    factory: str  # the Meter method the package's create_* function calls
    operation_type: str
    allowed: frozenset[str]  # every attribute the convention lists for it
    required: frozenset[str]  # required or conditionally required and applicable to Dramatiq


class _RecordingMeter:
    """Stands in for a Meter: records what the package's ``create_*`` functions ask for."""

    def __getattr__(self, method: str) -> Callable[..., tuple[str, dict[str, Any]]]:
        return lambda **kwargs: (method, kwargs)


def _from_package(create: Callable[[Any], Any], **rules: Any) -> Convention:
    method, kwargs = create(_RecordingMeter())
    return Convention(name=kwargs["name"], unit=kwargs["unit"], factory=method, **rules)


# metric.messaging.attributes (+ attributes.messaging.common.minimal): error.type,
# server.address/port, messaging.operation.name, .system, .destination.partition.id,
# .destination.name, .destination.template; consumer metrics add .consumer.group.name and
# .destination.subscription.name; client.operation.duration adds .operation.type.
_COMMON = frozenset(
    {
        ERROR_TYPE,
        SERVER_ADDRESS,
        SERVER_PORT,
        MESSAGING_OPERATION_NAME,
        MESSAGING_SYSTEM,
        MESSAGING_DESTINATION_PARTITION_ID,
        MESSAGING_DESTINATION_NAME,
        MESSAGING_DESTINATION_TEMPLATE,
    }
)
_CONSUMER = _COMMON | {MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_SUBSCRIPTION_NAME}
# Required: system, operation.name; conditionally required and applicable here: destination.name
# (Dramatiq queue names are low-cardinality), server.address ("if available"); server.port is
# recommended and emitted with it. error.type is checked apart ("if and only if ... failed").
_REQUIRED = frozenset({MESSAGING_SYSTEM, MESSAGING_OPERATION_NAME, MESSAGING_DESTINATION_NAME})

CONVENTIONS = {
    c.name: c
    for c in (
        _from_package(
            messaging_metrics.create_messaging_client_operation_duration,
            operation_type=SEND,
            allowed=_CONSUMER | {MESSAGING_OPERATION_TYPE},
            required=_REQUIRED | {MESSAGING_OPERATION_TYPE},  # "if applicable": it is
        ),
        _from_package(
            messaging_metrics.create_messaging_client_sent_messages,
            operation_type=SEND,
            allowed=_COMMON,
            required=_REQUIRED,
        ),
        _from_package(
            messaging_metrics.create_messaging_process_duration,
            operation_type=PROCESS,
            allowed=_CONSUMER,
            required=_REQUIRED,
        ),
        _from_package(
            messaging_metrics.create_messaging_client_consumed_messages,
            operation_type=PROCESS,
            allowed=_CONSUMER,
            required=_REQUIRED,
        ),
    )
}

_DATA_TYPE = {"create_histogram": Histogram, "create_counter": Sum}


class Expected(Exception):
    """Listed in an actor's ``throws``: a handled outcome, not an error."""


def run_workload(broker: dramatiq.Broker, queue_name: str, start_worker: Callable[..., Any]) -> None:
    assert any(isinstance(m, AgeLimit) for m in broker.middleware)
    assert any(isinstance(m, TimeLimit) for m in broker.middleware)
    attempts: Counter[str] = Counter()
    retrying = {"max_retries": 2, "min_backoff": 10, "max_backoff": 20}

    @dramatiq.actor(queue_name=queue_name)
    def fine() -> None:
        pass

    @dramatiq.actor(queue_name=queue_name, **retrying)
    def flaky() -> None:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise ConnectionError("first attempt fails")

    @dramatiq.actor(queue_name=queue_name, **retrying)
    def doomed() -> None:
        raise ValueError("always fails")

    @dramatiq.actor(queue_name=queue_name, throws=(Expected,))
    def declared() -> None:
        raise Expected("the actor says so")

    @dramatiq.actor(queue_name=queue_name, max_age=1)
    def stale() -> None:
        raise AssertionError("a skipped message must not run")

    @dramatiq.actor(queue_name=queue_name)
    def later() -> None:
        pass

    @dramatiq.actor(queue_name=queue_name, time_limit=100, max_retries=0)
    def slow() -> None:
        for _ in range(100):
            __import__("time").sleep(0.05)

    fine.send()
    flaky.send()
    doomed.send()
    declared.send()
    old = stale.message()
    broker.enqueue(old.copy(message_timestamp=old.message_timestamp - 60_000))
    later.send_with_options(delay=50)
    slow.send()
    wait_processed(broker, queue_name, start_worker(threads=2))


EXPECTED_OUTCOMES = Counter(
    {
        ("fine", "success"): 1,
        ("flaky", "retry"): 1,
        ("flaky", "success"): 1,
        ("doomed", "retry"): 2,
        ("doomed", "failed"): 1,
        ("declared", "handled"): 1,
        ("stale", "skipped"): 1,
        ("later", "success"): 1,
        ("slow", "failed"): 1,
    }
)
#: The attempts that failed: error.type (the exception's qualified class name) and the status
#: description (the exception message alone; TimeLimitExceeded has none).
FAILED = {
    "flaky": ("ConnectionError", "first attempt fails"),
    "doomed": ("ValueError", "always fails"),
    "slow": ("dramatiq.middleware.time_limit.TimeLimitExceeded", None),
}


@pytest.fixture
def workload(broker, broker_kind, queue_name, start_worker, span_exporter, metric_reader):
    run_workload(broker, queue_name, start_worker)
    return span_exporter.get_finished_spans(), metric_reader.get_metrics_data()


def test_the_schema_url_is_the_conventions_version_whose_names_are_emitted():
    known = {schema.value for schema in Schemas}
    if semconv.SCHEMA_URL not in known:  # an older package (the oldest-releases run): ours is newer
        newest = max(tuple(int(p) for p in url.rsplit("/", 1)[1].split(".")) for url in known)
        assert tuple(int(p) for p in semconv.SCHEMA_VERSION.split(".")) > newest
    else:
        assert Schemas.V1_44_0.value == semconv.SCHEMA_URL  # type: ignore[attr-defined]
    assert semconv.MESSAGING_OPERATION_NAME == MESSAGING_OPERATION_NAME
    assert (semconv.OPERATION_TYPE_SEND, semconv.OPERATION_TYPE_PROCESS) == (SEND, PROCESS)


def running_worker_id(broker: dramatiq.Broker) -> str:
    """The registry's id of the one worker running on ``broker`` (the health view's, on Redis and the
    StubBroker: the key of its registry record)."""
    (otel,) = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
    (worker_id,) = [registry.worker_id for registry in otel._registry._registries.values()]
    if hasattr(broker, "namespace"):  # Redis
        assert broker.client.hkeys(redis_key(broker.namespace)) == [worker_id.encode()]
    elif broker in memory_registry:  # StubBroker
        assert list(memory_registry[broker]) == [worker_id]
    return worker_id


def test_every_span_follows_the_messaging_span_conventions(workload, broker, broker_kind, queue_name):
    spans, _ = workload
    worker_id = running_worker_id(broker)
    server = server_attributes(broker_kind)
    sends = [s for s in spans if s.attributes.get(MESSAGING_OPERATION_TYPE) == SEND]
    processes = [s for s in spans if s.attributes.get(MESSAGING_OPERATION_TYPE) == PROCESS]
    assert len(sends) + len(processes) == len(spans)  # nothing else is emitted by this package

    creation: dict[str, Any] = {}  # message id -> the PRODUCER send span (the creation context)
    for span in spans:
        operation = span.attributes[MESSAGING_OPERATION_TYPE]
        assert span.instrumentation_scope.schema_url == semconv.SCHEMA_URL
        assert span.name == f"{span.attributes[MESSAGING_OPERATION_NAME]} {queue_name}"
        assert span.attributes[MESSAGING_SYSTEM] == "dramatiq"
        assert span.attributes[MESSAGING_OPERATION_NAME] == operation  # send / process
        assert span.attributes[MESSAGING_DESTINATION_NAME] == queue_name
        assert isinstance(span.attributes[MESSAGING_MESSAGE_ID], str)
        assert {k: span.attributes[k] for k in server} == server
        if operation == SEND and span.kind is SpanKind.PRODUCER:
            assert span.links == () and span.parent is None
            creation[span.attributes[MESSAGING_MESSAGE_ID]] = span
            assert MESSAGING_CLIENT_ID not in span.attributes  # sent by the test, not by a worker
        else:  # processed by the worker, or sent again by it (Retries): recommended, the worker's id
            assert span.attributes[MESSAGING_CLIENT_ID] == worker_id
    assert len(creation) == 7  # one creation context per message

    for send in sends:  # a send whose context is not the creation context: CLIENT, linked to it
        if send.kind is SpanKind.PRODUCER:
            continue
        assert send.kind is SpanKind.CLIENT
        original = creation[send.attributes[MESSAGING_MESSAGE_ID]]
        assert [link.context.span_id for link in send.links] == [original.context.span_id]
        assert send.status.status_code is StatusCode.UNSET and ERROR_TYPE not in send.attributes
    assert {s.attributes["messaging.dramatiq.actor.name"] for s in sends if s.kind is SpanKind.CLIENT} == {
        "flaky",
        "doomed",
    }

    outcomes: Counter[tuple[str, str]] = Counter()
    for process in processes:
        actor = process.attributes["messaging.dramatiq.actor.name"]
        outcome = process.attributes["messaging.dramatiq.outcome"]
        outcomes[actor, outcome] += 1
        assert process.kind is SpanKind.CONSUMER
        original = creation[process.attributes[MESSAGING_MESSAGE_ID]]
        assert process.parent.span_id == original.context.span_id  # the documented default
        assert [link.context.span_id for link in process.links] == [original.context.span_id]
        if outcome in ("retry", "failed"):  # recording-errors.md
            assert process.status.status_code is StatusCode.ERROR
            error_type, description = FAILED[actor]
            assert (process.attributes[ERROR_TYPE], process.status.description) == (error_type, description)
            assert [e.name for e in process.events] == ["exception"]  # the default exception signal
        else:  # success, handled (`throws`), skipped: no error, nothing recorded
            assert process.status.status_code is StatusCode.UNSET
            assert ERROR_TYPE not in process.attributes
            assert process.events == ()
    assert outcomes == EXPECTED_OUTCOMES


def test_every_metric_point_follows_the_messaging_metric_conventions(workload, broker_kind, queue_name):
    spans, data = workload
    server = server_attributes(broker_kind)
    metrics = {
        metric.name: (scope.scope, metric)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    failed_processes = Counter(
        s.attributes[ERROR_TYPE]
        for s in spans
        if s.attributes[MESSAGING_OPERATION_TYPE] == PROCESS and ERROR_TYPE in s.attributes
    )
    count = Counter(s.attributes[MESSAGING_OPERATION_TYPE] for s in spans)

    for convention in CONVENTIONS.values():
        scope, metric = metrics[convention.name]
        assert scope.schema_url == semconv.SCHEMA_URL
        assert metric.unit == convention.unit
        assert isinstance(metric.data, _DATA_TYPE[convention.factory])
        if isinstance(metric.data, Sum):
            assert metric.data.is_monotonic
        errors: Counter[str] = Counter()
        total = 0
        for point in metric.data.data_points:
            attributes = dict(point.attributes)
            assert set(attributes) <= convention.allowed, set(attributes) - convention.allowed
            assert convention.required <= set(attributes)
            assert attributes[MESSAGING_SYSTEM] == "dramatiq"
            assert attributes[MESSAGING_DESTINATION_NAME] == queue_name
            assert attributes[MESSAGING_OPERATION_NAME] == convention.operation_type
            if MESSAGING_OPERATION_TYPE in attributes:
                assert attributes[MESSAGING_OPERATION_TYPE] == convention.operation_type
            assert {k: attributes[k] for k in server} == server
            value = point.count if isinstance(metric.data, Histogram) else point.value
            total += value
            if ERROR_TYPE in attributes:
                errors[attributes[ERROR_TYPE]] += value
        # Every operation is measured once: one point per span of that operation type, skips included.
        assert total == count[convention.operation_type], convention.name
        if convention.name == messaging_metrics.MESSAGING_PROCESS_DURATION:
            assert errors == failed_processes  # error.type if and only if the attempt failed
        else:  # no send failed; a delivery does not fail because its actor did
            assert errors == Counter()


def test_the_dramatiq_family_follows_the_naming_rules(workload):
    _, data = workload
    units = {
        metric.name: metric.unit
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.startswith("dramatiq.")
    }
    assert units[semconv.METRIC_TASKS] == "{task}"
    assert units[semconv.METRIC_TASK_DURATION] == "s"
    assert units[semconv.METRIC_IN_FLIGHT] == "{message}"
    for name, unit in units.items():
        # metrics.md: durations in seconds; counts a singular {annotation}, never empty or plural.
        assert unit == "s" or (re.fullmatch(r"\{[a-z_]+\}", unit) and not unit.endswith("s}")), (name, unit)
    # naming.md: UpDownCounter names are not pluralized (0.1.x: dramatiq.worker.messages_in_flight).
    assert semconv.METRIC_IN_FLIGHT == "dramatiq.worker.message.active"
    assert semconv.METRIC_WORKERS == "dramatiq.worker.count"
