"""Per-task performance records in PostgreSQL, written in batches off the task's path."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.utils import timezone
from dramatiq.middleware import CurrentMessage
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.django.records import writer
from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord
from opentelemetry_instrumentation_dramatiq_cfg.hooks import TaskOutcome

from .conftest import cleanup_broker, make_broker, process_all, spans_named

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_buffer():
    writer.flush()
    writer._buffer.clear()
    yield
    writer._buffer.clear()


def outcome(i: int = 0) -> TaskOutcome:
    return TaskOutcome("report", f"m{i}", "default", "success", 0, 0.25, None, "ab" * 16)


def test_a_real_worker_leaves_one_record_per_attempt(instrument, namespace, queue_name, span_exporter):
    instrument(completion_hooks=[writer.record_task])
    broker = make_broker("redis", namespace)
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name, max_retries=1, min_backoff=10, max_backoff=20)
    def sometimes(fail):
        if fail:
            raise ValueError("no")

    sometimes.send(False)
    sometimes.send(True)
    try:
        process_all(broker, queue_name)  # the worker's shutdown flushes the buffer
    finally:
        cleanup_broker(broker, namespace)

    rows = list(TaskRecord.objects.order_by("outcome").values_list("actor_name", "outcome", "retries"))
    assert rows == [("sometimes", "failed", 1), ("sometimes", "retry", 0), ("sometimes", "success", 0)]
    trace_ids = {
        trace.format_trace_id(s.context.trace_id) for s in spans_named(span_exporter, f"process {queue_name}")
    }
    assert set(TaskRecord.objects.values_list("trace_id", flat=True)) <= trace_ids
    assert all(
        record.duration >= 0 and record.queue_name == queue_name for record in TaskRecord.objects.all()
    )
    errors = set(TaskRecord.objects.values_list("outcome", "exception_type", "exception_message"))
    assert errors == {("success", "", ""), ("retry", "ValueError", "no"), ("failed", "ValueError", "no")}


def test_recording_never_touches_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        for i in range(100):
            writer.record_task(outcome(i))
    assert writer.flush() == 100
    assert TaskRecord.objects.count() == 100


@pytest.mark.expect_swallowed_errors
def test_a_failing_database_loses_nothing_until_the_buffer_is_full(monkeypatch):
    real_bulk_create = TaskRecord.objects.bulk_create
    monkeypatch.setattr(
        TaskRecord.objects, "bulk_create", lambda rows: (_ for _ in ()).throw(RuntimeError("db down"))
    )
    monkeypatch.setattr(writer, "MAX_BUFFER", 5)
    dropped_before = writer.dropped
    for i in range(7):
        writer.record_task(outcome(i))
    assert writer.flush() == 0  # kept for the next try
    monkeypatch.setattr(TaskRecord.objects, "bulk_create", real_bulk_create)
    assert writer.flush() == 5
    assert writer.dropped - dropped_before == 2
    assert sorted(TaskRecord.objects.values_list("message_id", flat=True)) == [f"m{i}" for i in range(2, 7)]


def test_prune_deletes_old_records_only():
    now = timezone.now()
    for days in (1, 10, 40, 400):
        TaskRecord.objects.create(
            actor_name="a",
            queue_name="q",
            duration=0.1,
            outcome="success",
            message_id=str(days),
            timestamp=now - timedelta(days=days),
        )
    out = io.StringIO()
    call_command("prune_task_records", "--days", "30", stdout=out)
    assert "Deleted 2 task records older than 30 days." in out.getvalue()
    assert sorted(TaskRecord.objects.values_list("message_id", flat=True)) == ["1", "10"]


class _Broken(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_records_keep_the_exception_type_and_a_truncated_redacted_message_not_the_exception():
    long = ValueError("x" * 5000)
    secret = ConnectionError("cannot reach redis://app:hunter2@cache:6379/0")
    for i, exception in enumerate((long, secret, _Broken("b"))):
        writer.record_task(dataclasses.replace(outcome(i), outcome="failed", exception=exception))
    assert all(pending.outcome.exception is None for pending in writer._buffer)  # no traceback kept
    assert writer.flush() == 3
    rows = dict(TaskRecord.objects.values_list("message_id", "exception_type"))
    assert rows == {"m0": "ValueError", "m1": "ConnectionError", "m2": "tests.test_task_records._Broken"}
    messages = dict(TaskRecord.objects.values_list("message_id", "exception_message"))
    assert len(messages["m0"]) == writer.MESSAGE_LENGTH and messages["m0"].endswith("…")
    assert messages["m1"] == "cannot reach redis://***@cache:6379/0"
    assert messages["m2"] == "<unprintable exception>"
