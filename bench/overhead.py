"""Overhead of the Dramatiq instrumentation per message, against the bare OpenTelemetry SDK floor.

Run::

    .venv/bin/python bench/overhead.py              # 20,000 messages x 5 rounds, about 1.5 min
    .venv/bin/python bench/overhead.py --quick      # 2,000 messages x 3 rounds, a few seconds
    .venv/bin/python bench/overhead.py --json bench.json

What is timed
-------------

Each configuration gets a fresh :class:`~dramatiq.brokers.stub.StubBroker` (the instrumentor attaches
its middleware in ``Broker.__init__``, so ``instrument()``/``uninstrument()`` around the broker's
creation switch it per configuration) with Dramatiq's default middleware and one no-op actor:

* **enqueue**: ``actor.send(i)`` in a loop on the main thread: building, encoding and enqueuing the
  message with every middleware hook, which is what an application pays per send;
* **process**: the work of one worker thread per message: ``Message.decode`` of the payload the broker
  stored, then ``WorkerThread.process_message`` (before-hooks, the actor, after-hooks), driven directly
  on the main thread over the payloads the enqueue loop left in the queue. The ack is a stand-in that
  emits the ``ack`` hooks (Dramatiq's consumer thread would do that). Timing a real
  ``dramatiq.Worker(broker, worker_threads=1)`` draining the queue was tried: it costs about 80 µs per
  message with no instrumentation at all (consumer thread, prefetch, work queue, ack hand-off), and the
  added cost it shows varied by ±4 µs from run to run, against ±0.5 µs this way.

Rows
----

* ``baseline``: not instrumented;
* ``api``: instrumented with only the OpenTelemetry API (the global proxy/no-op tracer and meter
  providers; metrics left on, as a project that installs the package but no SDK would have them);
* ``sdk spans``: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that does
  nothing; ``metrics_enabled=False``;
* ``sdk metrics``: an SDK ``MeterProvider`` with an ``InMemoryMetricReader`` (never collected while
  timing); ``traces_enabled=False``;
* ``sdk spans+metrics``: both;
* ``sdk metrics, guide set`` / ``semconv set``: ``sdk metrics`` with ``metrics_set="guide"`` (the
  guide's two per-message series) / ``"semconv"`` (the four messaging metrics): what each family costs;
* ``sdk spans 10% sampled`` / ``sdk spans+metrics 10% sampled`` (``, guide set``): the same with the
  tracer provider's sampler ``ParentBased(TraceIdRatioBased(0.1))``, what
  ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` and ``OTEL_TRACES_SAMPLER_ARG=0.1`` configure: nine
  messages in ten are not sampled (their context still travels), metrics are complete;
* ``no signals``: instrumented with ``traces_enabled=False, metrics_enabled=False``: what is left is
  the middleware's own machinery (hook dispatch, the enqueue wrapper, bookkeeping) and the
  propagation of the current context;
* ``minimal middleware``: not this package, a reference: a few-line Dramatiq middleware doing only
  the floor's span calls (below) in the same hooks, with no attributes, no metrics and no error
  handling. What it adds is what the floor costs once it runs inside Dramatiq;
* ``minimal + attributes``: the same, its spans carrying the attributes this package sets (messaging
  semantic conventions + actor name, retries, outcome);
* ``minimal + attributes + metrics`` (``, 10% sampled``): the same signals as ``sdk spans+metrics``
  written by hand: those spans, and this package's default metrics recorded for every message (the
  same instruments, on a third meter provider set up the same way); then with the 10% sampler. The
  ratio of the two is what head sampling saves on a hand-written instrumentation, the reference for
  the 10%-sampling target;
* ``other instrumentation, spans``: not this package, the other OpenTelemetry instrumentation of
  Dramatiq on PyPI, ``opentelemetry-instrumentor-dramatiq`` (spans only; it records no metric), with
  the same tracer provider, when it is installed (``pip install opentelemetry-instrumentor-dramatiq``;
  the row is left out otherwise). It wraps ``Actor.message_with_options`` and
  ``WorkerThread.process_message``, sets two attributes per span and does not make the process span
  current; it attaches the extracted context without detaching it, so its row runs in a copy of the
  thread's context, which the other rows never see.

* ``sdk spans, redis+pika instrumented`` (``, broker spans shown``): ``sdk spans`` with
  ``opentelemetry-instrumentation-redis`` and ``-pika`` instrumented on the same tracer provider,
  when installed (the test extra installs them), with ``suppress_broker_spans`` on (the default) / off.
  The StubBroker makes no Redis or RabbitMQ call: these rows show what loading the broker-client
  instrumentations and this package's suppression wrappers costs a message that needs neither; what
  suppression saves a real broker's worker is in ``bench/load.py --broker-clients``.

Floors, with no Dramatiq (hand-written OpenTelemetry calls in a tight loop):

* ``floor spans``, enqueue: ``tracer.start_span`` + ``propagate.inject`` into a dict + ``span.end``;
  process: ``propagate.extract`` from such a dict + ``start_span`` with that context +
  ``context.attach``/``detach`` + ``end``; same tracer provider as the instrumented rows;
* ``floor metrics``: the instrument calls the middleware makes for a successful message (enqueue: one
  histogram record and one counter add; process: two up-down-counter adds, three histogram records and
  two counter adds), with the same attribute sets, on a second ``MeterProvider`` set up the same way;
* ``floor spans+metrics``: both in the same loop;
* ``floor spans+attributes``: the floor spans carrying the attributes this package sets on a
  successful message (six on the send span; seven on the process span, and the outcome set before it
  ends). Not one of the issue's targets: printed as the floor of any middleware that sets the span
  attributes the messaging conventions ask for.

Span processor: the ``BatchSpanProcessor`` gets a queue and an export batch as large as one chunk of
messages (below) and is flushed after each chunk, outside the timing, so its export thread never runs
while timing. With the defaults (``--bsp-defaults``) the export thread wakes every 512 spans, and on
CPython 3.11 a thread waiting for the GIL while the main thread releases it briefly and often (each
``send`` does, in ``uuid4``) turns every release into a futex hand-off: 13-17 µs more per send, a
cost that is not the instrumentation's and that the floors, which release nothing, never pay. Chunks
keep the spans waiting in memory to about what a default processor holds: queueing all 20,000 spans
of a row for one flush made sends about 10 µs slower and much noisier.

Method: every row is timed in chunks of 1,000 messages (the garbage collector off while timing, as
``timeit`` does) after a warm-up of a few hundred; each round runs every row once, starting at a
different row each round. The **added cost** of a Dramatiq row is its time per message minus the
baseline's of the same round; the tables show the median over rounds of those differences, and the
floors' medians. ``ratio`` is added cost / floor: 1.0 would mean the instrumentation costs exactly
what the hand-written calls cost in a tight loop.

Targets: ``sdk spans`` added ≤ 1.3 x ``floor spans``, for enqueue and for process; ``sdk
spans+metrics`` added ≤ 1.3 x ``floor spans+metrics`` (each part is printed either way); ``api``
added ≤ 5 µs per message, for enqueue and for process (their sum is printed too); ``sdk
spans+metrics 10% sampled`` added ≤ 0.35 x ``sdk spans+metrics`` added (enqueue + process); the
same fraction is printed for the hand-written reference; with the other instrumentation installed,
``sdk spans`` added ≤ 1.1 x ``other instrumentation, spans`` added, for enqueue and for process.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import dramatiq.worker
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, semconv
from opentelemetry_instrumentation_dramatiq_cfg.metrics import instruments_for

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script
from bench.minimal import MinimalMiddleware

QUEUE = "bench"
ACTOR = "bench_noop"
WARMUP = 300
CHUNK = 1_000
RATIO_TARGET = 1.3
API_TARGET_US = 5.0
SAMPLER_RATIO = 0.1
SAMPLED_TARGET = 0.35  # 10% sampled: added cost at most this fraction of the full-sampling cost
OTHER_TARGET = 1.1  # spans: added cost at most this times the other instrumentation's
OTHER = "opentelemetry-instrumentor-dramatiq"
OTHER_ROW = "other instrumentation, spans"
BROKER_CLIENTS_ROW = "sdk spans, redis+pika instrumented"

# Public since Dramatiq 2.0; Dramatiq 1.x only has the underscored name.
_WorkerThread = getattr(dramatiq.worker, "WorkerThread", None) or dramatiq.worker._WorkerThread

#: The clock rows are timed with: wall time, or with ``--cpu-time`` this thread's CPU time (which other
#: processes competing for the cores do not inflate; everything timed runs on this thread).
CLOCK: Callable[[], float] = time.perf_counter

Phases = tuple[float, float]  # seconds per message: (enqueue, process)


class NoOpSpanExporter(SpanExporter):  # type: ignore[misc]
    """Accepts every batch and does nothing with it: no encoding, no network I/O."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def noop(i: int) -> None:
    pass


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]


def _timed(work: Callable[[Sequence[Any]], None], items: Sequence[Any], flush: Callable[[], None]) -> float:
    """Seconds per item of ``work`` over ``items``, one chunk at a time, flushing spans in between."""
    gc.collect()
    total = 0.0
    for chunk in _chunks(items):
        gc.disable()
        try:
            start = CLOCK()
            work(chunk)
            total += CLOCK() - start
        finally:
            gc.enable()
        flush()
    return total / len(items)


# -- Dramatiq rows ---------------------------------------------------------------------------------


class _Acker:
    """Stands in for the consumer thread: emits the ack hooks, as its ``post_process_message`` does."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def post_process_message(self, message: MessageProxy) -> None:
        self.broker.emit_before("ack", message)
        self.broker.emit_after("ack", message)


class _NullWorkQueue:
    def task_done(self) -> None:
        pass


def run_dramatiq(messages: int, flush: Callable[[], None], middleware: Any = None) -> Phases:
    """Seconds per message for (enqueue, process) on a new StubBroker (instrumented or not).

    ``middleware``, if given, is put first on the broker (the minimal-middleware reference row).
    """
    broker = StubBroker()
    if middleware is not None:
        broker.middleware.insert(0, middleware)
    actor = dramatiq.actor(noop, broker=broker, actor_name=ACTOR, queue_name=QUEUE)
    worker = _WorkerThread(
        broker=broker, consumers={QUEUE: _Acker(broker)}, work_queue=_NullWorkQueue(), worker_timeout=1000
    )
    queue = broker.queues[QUEUE]
    send = actor.send
    process_message = worker.process_message
    decode = Message.decode

    def enqueue(numbers: Sequence[int]) -> None:
        for i in numbers:
            send(i)

    def process(payloads: Sequence[bytes]) -> None:
        for data in payloads:
            process_message(MessageProxy(decode(data)))

    def drain() -> list[bytes]:
        payloads = []
        while not queue.empty():
            payloads.append(queue.get_nowait())
        return payloads

    enqueue(range(WARMUP))
    process(drain())
    flush()
    enqueue_time = _timed(enqueue, range(messages), flush)
    payloads = drain()
    assert len(payloads) == messages, (len(payloads), messages)
    process_time = _timed(process, payloads, flush)
    broker.close()
    return enqueue_time, process_time


# -- Floors ----------------------------------------------------------------------------------------


def run_floor(
    messages: int,
    tracer: trace.Tracer | None,
    meter_provider: MeterProvider | None,
    flush: Callable[[], None],
    *,
    span_attributes: bool = False,
) -> Phases:
    """Seconds per message of the same telemetry written by hand, no Dramatiq.

    With ``span_attributes=True`` (spans only) the spans carry the attributes this package sets on
    a successful message, the outcome set when the process span ends.
    """
    perf_counter = time.perf_counter
    send_name = semconv.span_name(semconv.OPERATION_SEND, QUEUE)
    process_name = semconv.span_name(semconv.OPERATION_PROCESS, QUEUE)
    send_attributes = {
        semconv.MESSAGING_SYSTEM: semconv.SYSTEM,
        semconv.MESSAGING_OPERATION_NAME: semconv.OPERATION_SEND,
        semconv.MESSAGING_DESTINATION_NAME: QUEUE,
    }
    process_attributes = {**send_attributes, semconv.MESSAGING_OPERATION_NAME: semconv.OPERATION_PROCESS}
    queue_attributes = {semconv.LABEL_QUEUE_NAME: QUEUE}
    task_attributes = {semconv.LABEL_TASK_NAME: ACTOR}
    wait_attributes = {**task_attributes, **queue_attributes}
    status_attributes = {**task_attributes, semconv.LABEL_STATUS: semconv.STATUS_SUCCESS}
    instruments = instruments_for(meter_provider) if meter_provider is not None else None
    inject, extract = propagate.inject, propagate.extract
    attach, detach, set_span_in_context = otel_context.attach, otel_context.detach, trace.set_span_in_context

    def enqueue_spans(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None
        for carrier in carriers:
            span = tracer.start_span(send_name, kind=SpanKind.PRODUCER)
            inject(carrier, context=set_span_in_context(span))
            span.end()

    message_id = "0a6f4c1e-7d2b-4c5e-9f4b-2f0d3c1b5a79"
    send_span_attributes = {
        **send_attributes,
        semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_SEND,
        semconv.MESSAGING_MESSAGE_ID: message_id,
        semconv.DRAMATIQ_ACTOR_NAME: ACTOR,
    }
    process_span_attributes = {
        **process_attributes,
        semconv.MESSAGING_OPERATION_TYPE: semconv.OPERATION_TYPE_PROCESS,
        semconv.MESSAGING_MESSAGE_ID: message_id,
        semconv.DRAMATIQ_ACTOR_NAME: ACTOR,
        semconv.DRAMATIQ_RETRY_COUNT: 0,
    }

    def enqueue_attributed(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None
        for carrier in carriers:
            span = tracer.start_span(send_name, kind=SpanKind.PRODUCER, attributes=send_span_attributes)
            inject(carrier, context=set_span_in_context(span))
            span.end()

    def process_attributed(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None
        for carrier in carriers:
            span = tracer.start_span(
                process_name,
                context=extract(carrier),
                kind=SpanKind.CONSUMER,
                attributes=process_span_attributes,
            )
            token = attach(set_span_in_context(span))
            detach(token)
            span.set_attribute(semconv.DRAMATIQ_OUTCOME, semconv.OUTCOME_SUCCESS)
            span.end()

    def enqueue_metrics(carriers: Sequence[dict[str, Any]]) -> None:
        assert instruments is not None
        for _carrier in carriers:
            start = perf_counter()
            instruments.send_duration.record(perf_counter() - start, send_attributes)
            instruments.sent_messages.add(1, send_attributes)

    def enqueue_both(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None and instruments is not None
        for carrier in carriers:
            start = perf_counter()
            span = tracer.start_span(send_name, kind=SpanKind.PRODUCER)
            inject(carrier, context=set_span_in_context(span))
            span.end()
            instruments.send_duration.record(perf_counter() - start, send_attributes)
            instruments.sent_messages.add(1, send_attributes)

    def process_spans(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None
        for carrier in carriers:
            span = tracer.start_span(process_name, context=extract(carrier), kind=SpanKind.CONSUMER)
            token = attach(set_span_in_context(span))
            detach(token)
            span.end()

    def process_metrics(carriers: Sequence[dict[str, Any]]) -> None:
        assert instruments is not None
        for _carrier in carriers:
            start = perf_counter()
            instruments.in_flight.add(1, queue_attributes)
            instruments.queue_wait.record(0.001, wait_attributes)
            elapsed = perf_counter() - start
            instruments.in_flight.add(-1, queue_attributes)
            instruments.consumed_messages.add(1, process_attributes)
            instruments.tasks.add(1, status_attributes)
            instruments.process_duration.record(elapsed, process_attributes)
            instruments.task_duration.record(elapsed, task_attributes)

    def process_both(carriers: Sequence[dict[str, Any]]) -> None:
        assert tracer is not None and instruments is not None
        for carrier in carriers:
            start = perf_counter()
            span = tracer.start_span(process_name, context=extract(carrier), kind=SpanKind.CONSUMER)
            token = attach(set_span_in_context(span))
            instruments.in_flight.add(1, queue_attributes)
            instruments.queue_wait.record(0.001, wait_attributes)
            detach(token)
            span.end()
            elapsed = perf_counter() - start
            instruments.in_flight.add(-1, queue_attributes)
            instruments.consumed_messages.add(1, process_attributes)
            instruments.tasks.add(1, status_attributes)
            instruments.process_duration.record(elapsed, process_attributes)
            instruments.task_duration.record(elapsed, task_attributes)

    if span_attributes:
        enqueue, process = enqueue_attributed, process_attributed
    elif tracer is not None and instruments is not None:
        enqueue, process = enqueue_both, process_both
    elif tracer is not None:
        enqueue, process = enqueue_spans, process_spans
    else:
        enqueue, process = enqueue_metrics, process_metrics

    warm: list[dict[str, Any]] = [{} for _ in range(WARMUP)]
    enqueue(warm)
    process(warm)
    flush()
    carriers: list[dict[str, Any]] = [{} for _ in range(messages)]
    enqueue_time = _timed(enqueue, carriers, flush)
    process_time = _timed(process, carriers, flush)
    return enqueue_time, process_time


# -- Driver ----------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    kind: str  # "dramatiq" (compared with the baseline) or "floor"
    run: Callable[[int], Phases]
    enqueue: list[float] = field(default_factory=list)
    process: list[float] = field(default_factory=list)


#: Instrumented row -> the floor it is compared with.
FLOOR_OF = {
    "sdk spans": "floor spans",
    "sdk metrics": "floor metrics",
    "sdk spans+metrics": "floor spans+metrics",
    "minimal middleware": "floor spans",
    "minimal + attributes": "floor spans",
}


def _tracer_provider(bsp_defaults: bool, **kwargs: Any) -> TracerProvider:
    tracer_provider = TracerProvider(**kwargs)
    if bsp_defaults:
        processor = BatchSpanProcessor(NoOpSpanExporter())
    else:
        size = CHUNK + WARMUP
        processor = BatchSpanProcessor(
            NoOpSpanExporter(),
            max_queue_size=size,
            max_export_batch_size=size,
            schedule_delay_millis=3_600_000,
        )
    tracer_provider.add_span_processor(processor)
    return tracer_provider


def build_rows(bsp_defaults: bool) -> list[Row]:
    tracer_provider = _tracer_provider(bsp_defaults)
    # What OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1 configures.
    sampled_provider = _tracer_provider(bsp_defaults, sampler=ParentBased(TraceIdRatioBased(SAMPLER_RATIO)))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    floor_meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    reference_instruments = instruments_for(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    floor_tracer = tracer_provider.get_tracer("bench.floor")
    minimal = tracer_provider.get_tracer("bench.minimal")
    minimal_sampled = sampled_provider.get_tracer("bench.minimal")

    def flush() -> None:
        tracer_provider.force_flush()
        sampled_provider.force_flush()

    instrumentor = DramatiqInstrumentor()

    def instrumented(**options: Any) -> Callable[[int], Phases]:
        def run(messages: int) -> Phases:
            instrumentor.instrument(**options)
            try:
                return run_dramatiq(messages, flush)
            finally:
                instrumentor.uninstrument()

        return run

    return [
        Row("baseline", "dramatiq", lambda n: run_dramatiq(n, flush)),
        Row("api", "dramatiq", instrumented()),
        Row("sdk spans", "dramatiq", instrumented(tracer_provider=tracer_provider, metrics_enabled=False)),
        Row("sdk metrics", "dramatiq", instrumented(meter_provider=meter_provider, traces_enabled=False)),
        Row(
            "sdk spans+metrics",
            "dramatiq",
            instrumented(tracer_provider=tracer_provider, meter_provider=meter_provider),
        ),
        Row(
            "sdk metrics, guide set",
            "dramatiq",
            instrumented(meter_provider=meter_provider, traces_enabled=False, metrics_set="guide"),
        ),
        Row(
            "sdk metrics, semconv set",
            "dramatiq",
            instrumented(meter_provider=meter_provider, traces_enabled=False, metrics_set="semconv"),
        ),
        Row(
            "sdk spans 10% sampled",
            "dramatiq",
            instrumented(tracer_provider=sampled_provider, metrics_enabled=False),
        ),
        Row(
            "sdk spans+metrics 10% sampled",
            "dramatiq",
            instrumented(tracer_provider=sampled_provider, meter_provider=meter_provider),
        ),
        Row(
            "sdk spans+metrics 10% sampled, guide set",
            "dramatiq",
            instrumented(
                tracer_provider=sampled_provider, meter_provider=meter_provider, metrics_set="guide"
            ),
        ),
        Row("no signals", "dramatiq", instrumented(traces_enabled=False, metrics_enabled=False)),
        Row("minimal middleware", "dramatiq", lambda n: run_dramatiq(n, flush, MinimalMiddleware(minimal))),
        Row(
            "minimal + attributes",
            "dramatiq",
            lambda n: run_dramatiq(n, flush, MinimalMiddleware(minimal, attributes=True)),
        ),
        Row(
            "minimal + attributes + metrics",
            "dramatiq",
            lambda n: run_dramatiq(
                n, flush, MinimalMiddleware(minimal, attributes=True, instruments=reference_instruments)
            ),
        ),
        Row(
            "minimal + attributes + metrics, 10% sampled",
            "dramatiq",
            lambda n: run_dramatiq(
                n,
                flush,
                MinimalMiddleware(minimal_sampled, attributes=True, instruments=reference_instruments),
            ),
        ),
        *_other_instrumentation_rows(tracer_provider, flush),
        *_broker_client_rows(tracer_provider, flush),
        Row("floor spans", "floor", lambda n: run_floor(n, floor_tracer, None, flush)),
        Row(
            "floor spans+attributes",
            "floor",
            lambda n: run_floor(n, floor_tracer, None, flush, span_attributes=True),
        ),
        Row("floor metrics", "floor", lambda n: run_floor(n, None, floor_meter_provider, flush)),
        Row(
            "floor spans+metrics", "floor", lambda n: run_floor(n, floor_tracer, floor_meter_provider, flush)
        ),
    ]


def _other_instrumentation_rows(tracer_provider: TracerProvider, flush: Callable[[], None]) -> list[Row]:
    """The other instrumentation's row, if it is installed (see the module docstring)."""
    try:
        from opentelemetry_instrumentor_dramatiq import DramatiqInstrumentor as OtherInstrumentor
    except ImportError:
        return []

    def inside(messages: int) -> Phases:
        other = OtherInstrumentor()
        other.instrument(tracer_provider=tracer_provider)
        try:
            return run_dramatiq(messages, flush)
        finally:
            other.uninstrument()

    def run(messages: int) -> Phases:
        return contextvars.copy_context().run(inside, messages)  # it leaves contexts attached

    return [Row(OTHER_ROW, "dramatiq", run)]


def _broker_client_rows(tracer_provider: TracerProvider, flush: Callable[[], None]) -> list[Row]:
    """``sdk spans`` with the Redis and pika instrumentations loaded, if installed (see the docstring)."""
    try:
        from opentelemetry.instrumentation.pika import PikaInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:
        return []
    instrumentor = DramatiqInstrumentor()

    def with_clients(**options: Any) -> Callable[[int], Phases]:
        def run(messages: int) -> Phases:
            clients = (RedisInstrumentor(), PikaInstrumentor())
            for client in clients:
                client.instrument(tracer_provider=tracer_provider)
            instrumentor.instrument(tracer_provider=tracer_provider, metrics_enabled=False, **options)
            try:
                return run_dramatiq(messages, flush)
            finally:
                instrumentor.uninstrument()
                for client in clients:
                    client.uninstrument()

        return run

    return [
        Row(BROKER_CLIENTS_ROW, "dramatiq", with_clients()),
        Row(
            f"{BROKER_CLIENTS_ROW}, broker spans shown",
            "dramatiq",
            with_clients(suppress_broker_spans=False),
        ),
    ]


def us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def measure(
    messages: int, rounds: int, *, bsp_defaults: bool = False, progress: bool = False
) -> dict[str, Any]:
    """Run every row ``rounds`` times and summarize; the report is what ``--json`` writes."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        print("warning: a global tracer provider is set: the 'api' row is not API-only", file=sys.stderr)
    rows = build_rows(bsp_defaults)
    started = time.perf_counter()
    for round_index in range(rounds):
        shift = round_index % len(rows)
        for row in rows[shift:] + rows[:shift]:
            enqueue, process = row.run(messages)
            row.enqueue.append(enqueue)
            row.process.append(process)
        if progress:
            elapsed = time.perf_counter() - started
            print(f"round {round_index + 1}/{rounds} done ({elapsed:.0f} s)", file=sys.stderr)

    baseline = rows[0]
    results: dict[str, Any] = {}
    for row in rows:
        entry: dict[str, Any] = {"kind": row.kind}
        for phase in ("enqueue", "process"):
            own = getattr(row, phase)
            cell: dict[str, Any] = {
                "per_message_us": us(statistics.median(own)),
                "rounds_us": [us(v) for v in own],
            }
            if row.kind == "dramatiq" and row is not baseline:
                added = [a - b for a, b in zip(own, getattr(baseline, phase), strict=True)]
                cell["added_us"] = us(statistics.median(added))
                cell["added_rounds_us"] = [us(v) for v in added]
            entry[phase] = cell
        results[row.name] = entry
    for name, floor in FLOOR_OF.items():
        for phase in ("enqueue", "process"):
            cell = results[name][phase]
            cell["floor_us"] = results[floor][phase]["per_message_us"]
            cell["ratio"] = round(cell["added_us"] / cell["floor_us"], 3)

    for phase in ("enqueue", "process"):
        cell = results["sdk spans"][phase]
        cell["ratio_to_minimal_middleware"] = round(
            cell["added_us"] / results["minimal middleware"][phase]["added_us"], 3
        )
        cell["ratio_to_floor_with_attributes"] = round(
            cell["added_us"] / results["floor spans+attributes"][phase]["per_message_us"], 3
        )

    def ratio_met(name: str, phase: str) -> bool:
        return bool(results[name][phase]["ratio"] <= RATIO_TARGET)

    def fraction(part: str, whole: str) -> float:
        """Added cost (enqueue + process) of row ``part`` over that of row ``whole``."""
        return round(
            (results[part]["enqueue"]["added_us"] + results[part]["process"]["added_us"])
            / (results[whole]["enqueue"]["added_us"] + results[whole]["process"]["added_us"]),
            3,
        )

    api = results["api"]
    sampled_fraction = fraction("sdk spans+metrics 10% sampled", "sdk spans+metrics")
    reference_fraction = fraction(
        "minimal + attributes + metrics, 10% sampled", "minimal + attributes + metrics"
    )
    targets = {
        "sdk spans, enqueue: added <= 1.3x floor spans": ratio_met("sdk spans", "enqueue"),
        "sdk spans, process: added <= 1.3x floor spans": ratio_met("sdk spans", "process"),
        "sdk spans+metrics, enqueue: added <= 1.3x floor spans+metrics": ratio_met(
            "sdk spans+metrics", "enqueue"
        ),
        "sdk spans+metrics, process: added <= 1.3x floor spans+metrics": ratio_met(
            "sdk spans+metrics", "process"
        ),
        "api, enqueue: added <= 5 us": bool(api["enqueue"]["added_us"] <= API_TARGET_US),
        "api, process: added <= 5 us": bool(api["process"]["added_us"] <= API_TARGET_US),
        "spans+metrics 10% sampled: added <= 0.35x full sampling": bool(sampled_fraction <= SAMPLED_TARGET),
    }
    if OTHER_ROW in results:
        for phase in ("enqueue", "process"):
            cell = results["sdk spans"][phase]
            cell["ratio_to_other"] = round(cell["added_us"] / results[OTHER_ROW][phase]["added_us"], 3)
            targets[f"sdk spans, {phase}: added <= 1.1x {OTHER_ROW}"] = bool(
                cell["ratio_to_other"] <= OTHER_TARGET
            )
    return {
        "messages": messages,
        "rounds": rounds,
        "chunk": CHUNK,
        "bsp_defaults": bsp_defaults,
        "clock": "thread CPU time" if CLOCK is time.thread_time else "wall time",
        "seconds": round(time.perf_counter() - started, 1),
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "dramatiq": dramatiq.__version__,
            "opentelemetry_sdk": _version("opentelemetry-sdk"),
            OTHER: _version(OTHER),
        },
        "results": results,
        "api_added_total_us": round(api["enqueue"]["added_us"] + api["process"]["added_us"], 3),
        "sampled_fraction_of_full": sampled_fraction,
        "reference_sampled_fraction_of_full": reference_fraction,
        "sdk_spans_metrics_over_reference": fraction("sdk spans+metrics", "minimal + attributes + metrics"),
        "targets": targets,
    }


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def render(report: dict[str, Any]) -> str:
    """The report as markdown: a table per phase, then the targets."""
    results = report["results"]
    env = report["environment"]
    lines = [
        f"{report['messages']:,} messages x {report['rounds']} rounds (median); Python {env['python']}, "
        f"Dramatiq {env['dramatiq']}, OpenTelemetry SDK {env['opentelemetry_sdk']}, {env['cpus']} CPUs; "
        f"{report['seconds']:.0f} s; {report['clock']}",
    ]
    for phase in ("enqueue", "process"):
        lines += [
            "",
            f"| {phase} | µs/message | added | floor | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, entry in results.items():
            cell = entry[phase]
            added = f"{cell['added_us']:+.1f}" if "added_us" in cell else ""
            floor = f"{cell['floor_us']:.1f}" if "floor_us" in cell else ""
            ratio = f"{cell['ratio']:.2f}x" if "ratio" in cell else ""
            lines.append(f"| {name} | {cell['per_message_us']:.1f} | {added} | {floor} | {ratio} |")
    lines += ["", "Targets:"]
    for target, met in report["targets"].items():
        lines.append(f"- {target}: {'met' if met else 'NOT met'}")
    lines.append(f"- (api, enqueue + process: {report['api_added_total_us']:.1f} µs added per message)")
    lines.append(
        "- (spans+metrics 10% sampled / full sampling, enqueue + process added: "
        f"{report['sampled_fraction_of_full']:.2f}; the hand-written reference, minimal + attributes + "
        f"metrics: {report['reference_sampled_fraction_of_full']:.2f})"
    )
    lines.append(
        "- (sdk spans+metrics added / minimal + attributes + metrics added, enqueue + process: "
        f"{report['sdk_spans_metrics_over_reference']:.2f}x)"
    )
    spans = results["sdk spans"]
    if "ratio_to_other" in spans["enqueue"]:
        lines.append(
            f"- (sdk spans added / {OTHER_ROW} added ({OTHER} {env[OTHER]}): "
            f"enqueue {spans['enqueue']['ratio_to_other']:.2f}x, "
            f"process {spans['process']['ratio_to_other']:.2f}x)"
        )
    lines.append(
        "- (sdk spans added / minimal middleware added: "
        f"enqueue {spans['enqueue']['ratio_to_minimal_middleware']:.2f}x, "
        f"process {spans['process']['ratio_to_minimal_middleware']:.2f}x)"
    )
    lines.append(
        "- (sdk spans added / floor spans+attributes: "
        f"enqueue {spans['enqueue']['ratio_to_floor_with_attributes']:.2f}x, "
        f"process {spans['process']['ratio_to_floor_with_attributes']:.2f}x)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per row and round (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported (5)")
    parser.add_argument("--quick", action="store_true", help="2,000 messages x 3 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the full report, every round, as JSON")
    parser.add_argument(
        "--bsp-defaults",
        action="store_true",
        help="BatchSpanProcessor with its default sizes: its export thread runs while timing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this thread's CPU time instead of wall time (for a machine other work shares)",
    )
    args = parser.parse_args(argv)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.thread_time
    messages, rounds = (2_000, 3) if args.quick else (args.messages, args.rounds)
    if messages <= 0 or rounds <= 0:
        parser.error("--messages and --rounds must be positive")
    report = measure(messages, rounds, bsp_defaults=args.bsp_defaults, progress=not args.quiet)
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
