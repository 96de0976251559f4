"""Spans on every broker: names, kinds, parents, attributes and outcomes; Dramatiq's features intact."""

from __future__ import annotations

import asyncio

import dramatiq
import pytest
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, TimeLimit
from dramatiq.middleware.asyncio import AsyncIO
from dramatiq.results import Results
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from .conftest import process_all, send_to_unreachable_redis, spans_named, wait_processed


def process_spans(exporter, queue_name):
    return sorted(
        spans_named(exporter, f"process {queue_name}"),
        key=lambda s: s.attributes["messaging.dramatiq.message.retries"],
    )


def test_send_and_process_spans_carry_the_messaging_attributes(
    broker, start_worker, queue_name, span_exporter
):
    broker.add_middleware(CurrentMessage())
    seen_retries = []

    @dramatiq.actor(queue_name=queue_name)
    def greet(name):
        seen_retries.append(CurrentMessage.get_current_message().options.get("retries", 0))

    message = greet.send("ada")
    wait_processed(broker, queue_name, start_worker())

    (send,) = spans_named(span_exporter, f"send {queue_name}")
    (process,) = spans_named(span_exporter, f"process {queue_name}")
    common = {
        "messaging.system": "dramatiq",
        "messaging.destination.name": queue_name,
        "messaging.message.id": message.message_id,
        "messaging.dramatiq.actor.name": "greet",
    }
    assert {k: send.attributes[k] for k in common} == common
    assert {k: process.attributes[k] for k in common} == common
    assert (send.attributes["messaging.operation.name"], send.attributes["messaging.operation.type"]) == (
        "send",
        "send",
    )
    assert (
        process.attributes["messaging.operation.name"],
        process.attributes["messaging.operation.type"],
    ) == (
        "process",
        "process",
    )
    assert process.attributes["messaging.dramatiq.message.retries"] == seen_retries[0] == 0
    assert process.attributes["messaging.dramatiq.outcome"] == "success"
    assert process.status.status_code is StatusCode.UNSET
    if type(broker).__name__ == "StubBroker":
        assert "server.address" not in process.attributes
    else:
        assert (process.attributes["server.address"], process.attributes["server.port"]) == (
            "127.0.0.1",
            6379 if type(broker).__name__ == "RedisBroker" else 5672,
        )
    assert "traceparent" in message.options and "otel" not in str(sorted(message.options))


def test_messaging_client_id_is_the_registry_id_of_the_worker_whose_thread_did_it(
    broker, start_worker, queue_name, span_exporter
):
    """Recommended on send and process spans: the worker's id in the worker registry, on its threads'
    process spans and on what they send; a send from elsewhere (this test's thread) carries none.
    Two workers in this process, each on its own queue: each span names the right one."""
    from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware

    second_queue = f"{queue_name}-b"

    @dramatiq.actor(queue_name=second_queue)
    def second(number):
        pass

    @dramatiq.actor(queue_name=queue_name)
    def first(number):
        second.send(number)

    workers = [start_worker(threads=2, queues={queue_name}), start_worker(threads=2, queues={second_queue})]
    for number in range(3):
        first.send(number)
        second.send(number + 10)
    wait_processed(broker, queue_name, workers[0])
    wait_processed(broker, second_queue, workers[1])
    (otel,) = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
    first_id, second_id = (otel._registry._registries[id(worker)].worker_id for worker in workers)
    assert first_id != second_id

    def spans(operation: str, queue: str) -> list[dict]:
        return [dict(span.attributes) for span in spans_named(span_exporter, f"{operation} {queue}")]

    assert [a.get("messaging.client.id") for a in spans("process", queue_name)] == [first_id] * 3
    assert [a.get("messaging.client.id") for a in spans("process", second_queue)] == [second_id] * 6
    assert [a.get("messaging.client.id") for a in spans("send", queue_name)] == [None] * 3  # from here
    sent_to_second = sorted(
        (a["messaging.dramatiq.actor.name"], a.get("messaging.client.id", ""))
        for a in spans("send", second_queue)
    )
    assert sent_to_second == [("second", "")] * 3 + [("second", first_id)] * 3  # here, and by `first`


def test_spans_created_in_the_actor_are_children_of_the_process_span(
    broker, start_worker, queue_name, span_exporter, tracer_provider
):
    tracer = tracer_provider.get_tracer("test")

    @dramatiq.actor(queue_name=queue_name)
    def nested():
        with tracer.start_as_current_span("inside"):
            pass

    nested.send()
    wait_processed(broker, queue_name, start_worker())

    (process,) = spans_named(span_exporter, f"process {queue_name}")
    (inside,) = spans_named(span_exporter, "inside")
    assert inside.parent.span_id == process.context.span_id


def test_a_delayed_message_is_named_after_its_real_queue(broker, start_worker, queue_name, span_exporter):
    @dramatiq.actor(queue_name=queue_name)
    def later():
        pass

    message = later.send_with_options(delay=20)
    wait_processed(broker, queue_name, start_worker())

    (send,) = spans_named(span_exporter, f"send {queue_name}")
    assert send.attributes["messaging.dramatiq.message.delay_ms"] == 20
    assert send.attributes["messaging.dramatiq.message.eta"] == message.options["eta"]
    (process,) = spans_named(span_exporter, f"process {queue_name}")
    assert process.parent.span_id == send.context.span_id
    assert not [s for s in span_exporter.get_finished_spans() if ".DQ" in s.name]


def test_retry_attempts_share_the_original_trace(broker, start_worker, queue_name, span_exporter):
    @dramatiq.actor(queue_name=queue_name, max_retries=2, min_backoff=10, max_backoff=20)
    def flaky():
        raise ConnectionError("down")

    message = flaky.send()
    wait_processed(broker, queue_name, start_worker())

    (original,) = [s for s in spans_named(span_exporter, f"send {queue_name}") if s.parent is None]
    assert original.kind is SpanKind.PRODUCER and original.links == ()
    attempts = process_spans(span_exporter, queue_name)
    assert [a.attributes["messaging.dramatiq.message.retries"] for a in attempts] == [0, 1, 2]
    assert all(a.parent.span_id == original.context.span_id for a in attempts)
    assert all([link.context.span_id for link in a.links] == [original.context.span_id] for a in attempts)
    assert {a.context.trace_id for a in attempts} == {original.context.trace_id}
    assert [a.attributes["messaging.dramatiq.outcome"] for a in attempts] == ["retry", "retry", "failed"]
    for attempt in attempts:
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.attributes["error.type"] == "ConnectionError"
        assert attempt.status.description == "down"  # the message alone (recording-errors.md)
        assert [e.name for e in attempt.events] == ["exception"]
    retry_sends = [s for s in spans_named(span_exporter, f"send {queue_name}") if s.parent is not None]
    assert sorted(s.parent.span_id for s in retry_sends) == sorted(a.context.span_id for a in attempts[:2])
    assert all(s.attributes["messaging.dramatiq.reenqueue"] for s in retry_sends)
    # Not the creation context: CLIENT, linked to the one the message carries (messaging-spans.md).
    assert {s.kind for s in retry_sends} == {SpanKind.CLIENT}
    assert all([link.context.span_id for link in s.links] == [original.context.span_id] for s in retry_sends)
    assert {s.attributes["messaging.message.id"] for s in retry_sends} == {message.message_id}


def test_throws_and_retry_are_not_errors(broker, start_worker, queue_name, span_exporter):
    class Expected(Exception):
        pass

    @dramatiq.actor(queue_name=queue_name, throws=(Expected,), max_retries=0)
    def expected():
        raise Expected("fine")

    @dramatiq.actor(queue_name=queue_name, max_retries=1, min_backoff=10, max_backoff=20)
    def asks_again():
        if CurrentMessage.get_current_message().options.get("retries", 0) == 0:
            raise dramatiq.Retry(delay=10)

    broker.add_middleware(CurrentMessage())
    expected.send()
    asks_again.send()
    wait_processed(broker, queue_name, start_worker())

    by_outcome = {}
    for span in spans_named(span_exporter, f"process {queue_name}"):
        by_outcome.setdefault(
            (span.attributes["messaging.dramatiq.actor.name"], span.attributes["messaging.dramatiq.outcome"]),
            [],
        ).append(span)
    assert sorted(by_outcome) == [("asks_again", "retry"), ("asks_again", "success"), ("expected", "handled")]
    for key in [("expected", "handled"), ("asks_again", "retry")]:
        (span,) = by_outcome[key]
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
        assert [e.name for e in span.events] == []  # handled: not recorded (recording-errors.md)


def test_a_message_skipped_by_age_limit_is_skipped(broker, start_worker, queue_name, span_exporter):
    assert any(isinstance(m, AgeLimit) for m in broker.middleware)

    @dramatiq.actor(queue_name=queue_name, max_age=1)
    def old():
        raise AssertionError("must not run")

    message = old.message()
    broker.enqueue(message.copy(message_timestamp=message.message_timestamp - 60_000))
    wait_processed(broker, queue_name, start_worker())

    (span,) = spans_named(span_exporter, f"process {queue_name}")
    assert span.attributes["messaging.dramatiq.outcome"] == "skipped"
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("broker_kind", ["stub", "redis"])
def test_a_time_limited_task_ends_its_span_with_an_error(broker, start_worker, queue_name, span_exporter):
    assert any(isinstance(m, TimeLimit) for m in broker.middleware)

    @dramatiq.actor(queue_name=queue_name, time_limit=100, max_retries=0)
    def slow():
        for _ in range(100):
            __import__("time").sleep(0.05)

    slow.send()
    wait_processed(broker, queue_name, start_worker())

    (span,) = spans_named(span_exporter, f"process {queue_name}")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "dramatiq.middleware.time_limit.TimeLimitExceeded"
    assert span.attributes["messaging.dramatiq.outcome"] == "failed"


def test_without_retries_middleware_a_failure_is_final(instrument, queue_name, span_exporter):
    from dramatiq.brokers.stub import StubBroker

    instrument()
    broker = StubBroker(middleware=[m() for m in (AgeLimit, TimeLimit)])
    dramatiq.set_broker(broker)
    assert not any(isinstance(m, Retries) for m in broker.middleware)

    @dramatiq.actor(queue_name=queue_name)
    def once():
        raise ValueError("no retries here")

    once.send()
    process_all(broker, queue_name)
    (span,) = spans_named(span_exporter, f"process {queue_name}")
    assert span.attributes["messaging.dramatiq.outcome"] == "failed"


def test_pipeline_stages_chain_their_spans(broker, start_worker, queue_name, span_exporter):
    broker.add_middleware(Results(backend=_results_backend(broker)))

    @dramatiq.actor(queue_name=queue_name)
    def first(x):
        return x + 1

    @dramatiq.actor(queue_name=queue_name, store_results=True)
    def second(x):
        return x * 2

    pipe = dramatiq.pipeline([first.message(1), second.message()]).run()
    wait_processed(broker, queue_name, start_worker())

    assert pipe.get_result(block=True, timeout=10_000) == 4
    spans = {
        s.attributes["messaging.dramatiq.actor.name"] + " " + s.name.split()[0]: s
        for s in _all(span_exporter)
    }
    assert spans["second send"].parent.span_id == spans["first process"].context.span_id
    assert spans["second process"].parent.span_id == spans["second send"].context.span_id
    assert spans["first process"].parent.span_id == spans["first send"].context.span_id


def test_groups_and_callbacks_keep_working(broker, start_worker, queue_name, span_exporter):
    done = []
    broker.add_middleware(Results(backend=_results_backend(broker)))

    @dramatiq.actor(queue_name=queue_name, max_retries=0, store_results=True)
    def task(x):
        if x < 0:
            raise ValueError(x)
        return x

    @dramatiq.actor(queue_name=queue_name)
    def on_ok(message_data, result):
        done.append(("ok", result))

    @dramatiq.actor(queue_name=queue_name)
    def on_bad(message_data, exception_data):
        done.append(("bad", exception_data["type"]))

    group = dramatiq.group([task.message(1), task.message(2)]).run()
    task.send_with_options(args=(5,), on_success=on_ok)
    task.send_with_options(args=(-1,), on_failure=on_bad)
    wait_processed(broker, queue_name, start_worker())

    assert sorted(group.get_results(block=True, timeout=10_000)) == [1, 2]
    assert sorted(done) == [("bad", "ValueError"), ("ok", 5)]
    callbacks = [
        s for s in _all(span_exporter) if s.attributes["messaging.dramatiq.actor.name"] in ("on_ok", "on_bad")
    ]
    assert len([s for s in callbacks if s.name.startswith("process")]) == 2


@pytest.mark.parametrize("broker_kind", ["stub", "redis"])
def test_inside_an_async_actor_the_process_span_is_current(broker, start_worker, queue_name, span_exporter):
    broker.add_middleware(AsyncIO())
    seen = []

    @dramatiq.actor(queue_name=queue_name)
    async def coroutine():
        await asyncio.sleep(0)
        seen.append(trace.get_current_span().get_span_context().span_id)

    coroutine.send()
    wait_processed(broker, queue_name, start_worker())

    (span,) = spans_named(span_exporter, f"process {queue_name}")
    assert seen == [span.context.span_id]


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_worker_thread_context_is_restored_after_every_message(
    broker, start_worker, queue_name, span_exporter
):
    brackets = []
    stale = []

    class Bracket(dramatiq.Middleware):  # type: ignore[misc]
        """Put before ours: sees the thread's context before our before-hook and after our after-hook."""

        def before_process_message(self, broker, message):
            self.before = otel_context.get_current()

        def after_process_message(self, broker, message, *, result=None, exception=None):
            brackets.append((self.before, otel_context.get_current()))

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def mixed(i):
        parent = trace.get_current_span().parent
        sent_by = CurrentMessage.get_current_message().options["traceparent"].split("-")[2]
        if parent is None or f"{parent.span_id:016x}" != sent_by:
            stale.append(i)
        if i % 3 == 0:
            raise ValueError(i)

    broker.add_middleware(CurrentMessage())
    broker.middleware.insert(0, Bracket())
    for i in range(1_000):
        mixed.send(i)
    wait_processed(broker, queue_name, start_worker(threads=1))

    assert len(brackets) == 1_000 and stale == []
    assert all(before == after == otel_context.Context() for before, after in brackets)
    processes = spans_named(span_exporter, f"process {queue_name}")
    sends = {s.context.span_id: s for s in spans_named(span_exporter, f"send {queue_name}")}
    assert all(
        sends[p.parent.span_id].attributes["messaging.message.id"] == p.attributes["messaging.message.id"]
        for p in processes
    )
    assert sum(p.status.status_code is StatusCode.ERROR for p in processes) == 334


def test_messages_without_context_start_a_new_trace(broker, start_worker, queue_name, span_exporter):
    @dramatiq.actor(queue_name=queue_name)
    def plain():
        pass

    ours = broker.middleware.pop(0)  # an uninstrumented producer sends these
    assert type(ours).__name__ == "OpenTelemetryMiddleware"
    try:
        plain.send()
        for garbage in ("garbage", 123, {"nested": "dict"}, "00-" + "f" * 200):
            message = plain.message()
            message.options["traceparent"] = garbage
            broker.enqueue(message)
    finally:
        broker.middleware.insert(0, ours)
    wait_processed(broker, queue_name, start_worker())

    processes = spans_named(span_exporter, f"process {queue_name}")
    assert len(processes) == 5 and spans_named(span_exporter, f"send {queue_name}") == []
    assert all(p.parent is None for p in processes)
    assert all(p.attributes["messaging.dramatiq.outcome"] == "success" for p in processes)


def test_a_failed_enqueue_ends_the_send_span_with_the_original_error(instrument, span_exporter):
    instrument()
    raised = send_to_unreachable_redis()

    (send,) = spans_named(span_exporter, "send unreachable")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == f"{type(raised).__module__}.{type(raised).__qualname__}"
    assert type(raised).__module__.startswith("redis")
    assert send.events[0].attributes["exception.message"] == str(raised)
    assert send.status.description == str(raised)


def test_use_links_starts_a_new_trace_linked_to_the_send(instrument, queue_name, span_exporter):
    from dramatiq.brokers.stub import StubBroker

    instrument(use_links=True)
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name)
    def linked():
        pass

    linked.send()
    process_all(broker, queue_name)
    (send,) = spans_named(span_exporter, f"send {queue_name}")
    (process,) = spans_named(span_exporter, f"process {queue_name}")
    assert process.parent is None and process.context.trace_id != send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]


def test_excluded_actors_and_queues_get_no_spans(instrument, queue_name, span_exporter):
    from dramatiq.brokers.stub import StubBroker

    instrument(excluded_actors=["quiet"], excluded_queues=[f"{queue_name}-silent"])
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name)
    def quiet():
        pass

    @dramatiq.actor(queue_name=f"{queue_name}-silent")
    def elsewhere():
        pass

    @dramatiq.actor(queue_name=queue_name)
    def loud():
        pass

    quiet.send()
    elsewhere.send()
    loud.send()
    process_all(broker, queue_name, f"{queue_name}-silent")
    assert {s.attributes["messaging.dramatiq.actor.name"] for s in span_exporter.get_finished_spans()} == {
        "loud"
    }


@pytest.mark.expect_swallowed_errors
def test_hooks_see_span_and_message_and_never_break_the_task(instrument, queue_name, span_exporter):
    from dramatiq.brokers.stub import StubBroker

    seen = []

    def publish_hook(span, message):
        span.set_attribute("app.tenant", "acme")
        seen.append(("publish", message.actor_name))
        raise RuntimeError("bad hook")

    def process_hook(span, message):
        seen.append(("process", message.actor_name))
        raise RuntimeError("bad hook")

    instrument(
        publish_hook=publish_hook, process_hook=process_hook, capture_args=True, capture_args_max_length=20
    )
    broker = StubBroker()
    dramatiq.set_broker(broker)
    ran = []

    @dramatiq.actor(queue_name=queue_name)
    def hooked(text):
        ran.append(text)

    hooked.send("x" * 100)
    process_all(broker, queue_name)
    assert ran == ["x" * 100]
    assert seen == [("publish", "hooked"), ("process", "hooked")]
    (send,) = spans_named(span_exporter, f"send {queue_name}")
    assert send.attributes["app.tenant"] == "acme"
    assert len(send.attributes["messaging.dramatiq.message.args"]) <= 20


@pytest.mark.expect_swallowed_errors
def test_a_broken_tracer_never_fails_a_send_or_a_task(instrument, queue_name):
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.trace import TracerProvider

    class BrokenProvider(TracerProvider):
        def get_tracer(self, *args, **kwargs):
            tracer = super().get_tracer(*args, **kwargs)

            def start_span(*a, **k):
                raise RuntimeError("tracer bug")

            tracer.start_span = start_span
            return tracer

    instrument(tracer_provider=BrokenProvider())
    broker = StubBroker()
    dramatiq.set_broker(broker)
    ran = []

    @dramatiq.actor(queue_name=queue_name)
    def still_runs():
        ran.append(1)

    still_runs.send()
    process_all(broker, queue_name)
    assert ran == [1]


def _results_backend(broker):
    from dramatiq.results.backends import RedisBackend, StubBackend

    if type(broker).__name__ == "RedisBroker":
        return RedisBackend(client=broker.client, namespace=broker.namespace + "-results")
    return StubBackend()


def _all(exporter):
    return exporter.get_finished_spans()


def test_a_resent_message_gets_a_client_span_linked_to_its_creation_context(
    instrument, queue_name, span_exporter, tracer_provider
):
    """The application sending the same message object twice: the second send is not the creation
    context (messaging-spans.md, "Send span (client)"); the message's traceparent is left as it was."""
    from dramatiq.brokers.stub import StubBroker

    instrument()
    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name)
    def twice():
        pass

    message = twice.send()
    traceparent = message.options["traceparent"]
    with tracer_provider.get_tracer("test").start_as_current_span("resend") as resend:
        broker.enqueue(message)
    assert message.options["traceparent"] == traceparent

    first, second = sorted(spans_named(span_exporter, f"send {queue_name}"), key=lambda s: s.start_time)
    assert (first.kind, second.kind) == (SpanKind.PRODUCER, SpanKind.CLIENT)
    assert second.parent.span_id == resend.get_span_context().span_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert second.attributes["messaging.dramatiq.reenqueue"] is True
