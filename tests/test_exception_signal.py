"""OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN: exceptions as span events (default), log events, or both."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs import export as log_export
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import StatusCode

from opentelemetry_instrumentation_dramatiq_cfg.exception_signal import OPT_IN_VARIABLE, ExceptionSignal

from .conftest import process_all, send_to_unreachable_redis, spans_named

# Renamed InMemoryLogRecordExporter in SDK 1.38 (the old name warns); the oldest releases have the old.
InMemoryLogExporter = getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter


@pytest.fixture
def log_exporter() -> Any:
    return InMemoryLogExporter()


@pytest.fixture
def logger_provider(log_exporter: Any) -> LoggerProvider:
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    return provider


def event_name(record: Any) -> str | None:
    """The event name of a log record (``event.name`` attribute before API 1.35)."""
    return getattr(record, "event_name", None) or (record.attributes or {}).get("event.name")


def exception_events(log_exporter: Any) -> list[Any]:
    return [data.log_record for data in log_exporter.get_finished_logs()]


def run_failing_and_throwing(instrument, logger_provider, queue_name):
    instrument(logger_provider=logger_provider)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    class Expected(Exception):
        pass

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def broken():
        raise ValueError("broken for good")

    @dramatiq.actor(queue_name=queue_name, max_retries=0, throws=(Expected,))
    def declared():
        raise Expected("the actor said so")

    broken.send()
    declared.send()
    process_all(broker, queue_name)


def process_span_of(span_exporter, queue_name, actor):
    (span,) = [
        s
        for s in spans_named(span_exporter, f"process {queue_name}")
        if s.attributes["messaging.dramatiq.actor.name"] == actor
    ]
    return span


@pytest.mark.parametrize(
    ("value", "span_events", "logs"),
    [
        (None, True, False),
        ("", True, False),
        ("logs", False, True),
        ("LOGS ", False, True),
        ("logs/dup", True, True),
        ("logs,logs/dup", True, True),
        ("http,logs", False, True),
    ],
)
def test_the_opt_in_variable_selects_the_signals(value, span_events, logs):
    environ = {} if value is None else {OPT_IN_VARIABLE: value}
    assert ExceptionSignal.from_env(environ) == ExceptionSignal(span_events=span_events, logs=logs)


def test_an_unknown_opt_in_value_warns_and_keeps_span_events(caplog):
    with caplog.at_level(logging.WARNING):
        assert ExceptionSignal.from_env({OPT_IN_VARIABLE: "log"}) == ExceptionSignal(True, False)
    assert OPT_IN_VARIABLE in caplog.text and "'log'" in caplog.text


def test_by_default_a_failure_is_a_span_event_and_no_log(
    instrument, logger_provider, log_exporter, queue_name, span_exporter, monkeypatch
):
    monkeypatch.delenv(OPT_IN_VARIABLE, raising=False)
    run_failing_and_throwing(instrument, logger_provider, queue_name)

    failed = process_span_of(span_exporter, queue_name, "broken")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "broken for good"  # the message alone, not "ValueError: ..."
    assert failed.attributes["error.type"] == "ValueError"
    assert [e.name for e in failed.events] == ["exception"]
    assert exception_events(log_exporter) == []


def test_with_logs_a_failure_is_a_log_event_on_the_span_context_and_no_span_event(
    instrument, logger_provider, log_exporter, queue_name, span_exporter, monkeypatch
):
    monkeypatch.setenv(OPT_IN_VARIABLE, "logs")
    run_failing_and_throwing(instrument, logger_provider, queue_name)

    failed = process_span_of(span_exporter, queue_name, "broken")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.events == ()
    (record,) = exception_events(log_exporter)  # the `throws` exception is recorded nowhere
    assert event_name(record) == "messaging.process.exception"
    assert record.severity_number is SeverityNumber.ERROR
    assert (record.trace_id, record.span_id) == (failed.context.trace_id, failed.context.span_id)
    assert record.attributes[EXCEPTION_TYPE] == "ValueError"
    assert record.attributes[EXCEPTION_MESSAGE] == "broken for good"
    assert "raise ValueError" in record.attributes[EXCEPTION_STACKTRACE]


def test_with_logs_dup_a_failure_is_both(
    instrument, logger_provider, log_exporter, queue_name, span_exporter, monkeypatch
):
    monkeypatch.setenv(OPT_IN_VARIABLE, "logs/dup")
    run_failing_and_throwing(instrument, logger_provider, queue_name)

    failed = process_span_of(span_exporter, queue_name, "broken")
    assert [e.name for e in failed.events] == ["exception"]
    (record,) = exception_events(log_exporter)
    assert event_name(record) == "messaging.process.exception"
    handled = process_span_of(span_exporter, queue_name, "declared")
    assert handled.status.status_code is StatusCode.UNSET
    assert handled.events == () and "error.type" not in handled.attributes
    assert handled.attributes["messaging.dramatiq.outcome"] == "handled"


def test_a_failed_send_is_a_warn_send_exception_event(
    instrument, logger_provider, log_exporter, span_exporter, monkeypatch
):
    monkeypatch.setenv(OPT_IN_VARIABLE, "logs")
    instrument(logger_provider=logger_provider)
    raised = send_to_unreachable_redis()

    (send,) = spans_named(span_exporter, "send unreachable")
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == str(raised)
    assert send.events == ()
    (record,) = exception_events(log_exporter)
    assert event_name(record) == "messaging.send.exception"
    assert record.severity_number is SeverityNumber.WARN
    assert record.span_id == send.context.span_id
    assert record.attributes[EXCEPTION_TYPE] == send.attributes["error.type"]
