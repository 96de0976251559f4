"""Permanent-failure hooks and log correlation."""

from __future__ import annotations

import logging

import dramatiq
import pytest
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.hooks import PermanentFailure, call_failure_hooks, call_hooks
from opentelemetry_instrumentation_dramatiq_cfg.logs import DramatiqLogFilter

from .conftest import cleanup_broker, make_broker, process_all, spans_named, unique, wait_processed

failures_seen: list[PermanentFailure] = []


def record_failure(failure: PermanentFailure) -> None:
    """A failure hook given by dotted path in the tests."""
    failures_seen.append(failure)


@pytest.fixture
def failures(instrument, broker_kind, namespace):
    failures_seen.clear()
    instrument(failure_hooks=[f"{__name__}.record_failure"])
    broker = make_broker(broker_kind, namespace)
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)
    yield broker
    cleanup_broker(broker, namespace)
    failures_seen.clear()


def test_failure_hook_runs_once_after_the_last_attempt(failures, queue_name, span_exporter):
    attempts: list[int] = []

    @dramatiq.actor(queue_name=queue_name, max_retries=3, min_backoff=10, max_backoff=20)
    def always_fails(data_id):
        attempts.append(CurrentMessage.get_current_message().options.get("retries", 0))
        raise ValueError(f"bad {data_id}")

    message = always_fails.send(7)
    process_all(failures, queue_name)

    assert attempts == [0, 1, 2, 3]
    (failure,) = failures_seen
    assert (failure.actor_name, failure.message_id, failure.queue_name, failure.retries) == (
        "always_fails",
        message.message_id,
        queue_name,
        3,
    )
    assert isinstance(failure.exception, ValueError) and str(failure.exception) == "bad 7"
    processes = spans_named(span_exporter, f"process {queue_name}")
    last = max(processes, key=lambda span: span.attributes["messaging.dramatiq.message.retries"])
    assert failure.trace_id == trace.format_trace_id(last.context.trace_id)
    assert [event.name for event in last.events if event.name == "dramatiq.permanent_failure"] == [
        "dramatiq.permanent_failure"
    ]
    assert all(
        not any(event.name == "dramatiq.permanent_failure" for event in span.events)
        for span in processes
        if span is not last
    )


def test_failure_hook_runs_for_an_exception_that_is_not_retried(failures, queue_name):
    @dramatiq.actor(queue_name=queue_name, throws=(KeyError,), max_retries=5)
    def refuses():
        raise KeyError("missing")

    refuses.send()
    process_all(failures, queue_name)

    (failure,) = failures_seen
    assert failure.retries == 0 and isinstance(failure.exception, KeyError)


def test_failure_hook_is_not_called_for_success_or_recovered_retries(failures, queue_name):
    @dramatiq.actor(queue_name=queue_name, max_retries=3, min_backoff=10, max_backoff=20)
    def recovers():
        if CurrentMessage.get_current_message().options.get("retries", 0) < 1:
            raise ConnectionError("transient")

    recovers.send()
    process_all(failures, queue_name)

    assert failures_seen == []


def outcome(message_id: str = "m") -> PermanentFailure:
    return PermanentFailure("a", message_id, "q", "failed", 3, 0.1, None, None)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_failure_hooks_fire_once_per_message_across_processes_on_redis(failures, namespace):
    failure = outcome(unique("message"))
    calls: list[PermanentFailure] = []
    other_process_broker = make_broker("redis", namespace)  # another worker on the same namespace
    try:
        assert call_failure_hooks(failures, failure, [calls.append]) == 1
        assert call_failure_hooks(other_process_broker, failure, [calls.append]) == 0
    finally:
        other_process_broker.close()
    assert calls == [failure]


@pytest.mark.expect_swallowed_errors
def test_a_failing_hook_does_not_stop_the_others():
    seen: list[str] = []

    def broken(failure: PermanentFailure) -> None:
        raise RuntimeError("hook bug")

    assert call_hooks(outcome(), [broken, lambda f: seen.append(f.actor_name)]) == 2
    assert seen == ["a"]


def test_completion_hooks_see_every_attempt_with_its_outcome(instrument, queue_name, span_exporter):
    from dramatiq.brokers.stub import StubBroker

    seen: list[PermanentFailure] = []
    instrument(completion_hooks=[seen.append])
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name, max_retries=3, min_backoff=10, max_backoff=20)
    def second_time_lucky():
        if CurrentMessage.get_current_message().options.get("retries", 0) < 1:
            raise ConnectionError("transient")

    message = second_time_lucky.send()
    process_all(broker, queue_name)

    assert [(o.outcome, o.retries, o.message_id) for o in seen] == [
        ("retry", 0, message.message_id),
        ("success", 1, message.message_id),
    ]
    assert isinstance(seen[0].exception, ConnectionError) and seen[1].exception is None
    assert all(o.duration >= 0 for o in seen)
    process_trace_ids = {
        trace.format_trace_id(s.context.trace_id) for s in span_exporter.get_finished_spans()
    }
    assert {o.trace_id for o in seen} <= process_trace_ids


def test_log_records_carry_the_process_span_and_message(broker, start_worker, queue_name, span_exporter):
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Capture()
    handler.addFilter(DramatiqLogFilter())
    logger = logging.getLogger(f"tests.{queue_name}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    @dramatiq.actor(queue_name=queue_name)
    def chatty():
        logger.info("working")

    try:
        message = chatty.send()
        worker = start_worker()
        wait_processed(broker, queue_name, worker)
        logger.info("outside")
    finally:
        logger.removeHandler(handler)

    (process,) = spans_named(span_exporter, f"process {queue_name}")
    inside, outside = records
    assert inside.otelTraceID == trace.format_trace_id(process.context.trace_id)
    assert inside.otelSpanID == trace.format_span_id(process.context.span_id)
    assert (inside.dramatiq_actor, inside.dramatiq_message_id) == ("chatty", message.message_id)
    assert (outside.otelTraceID, outside.otelSpanID, outside.dramatiq_actor, outside.dramatiq_message_id) == (
        "0",
        "0",
        "",
        "",
    )
