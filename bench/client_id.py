"""What ``messaging.client.id`` adds per message: the worker-id lookup, and one more span attribute.

Run::

    .venv/bin/python bench/client_id.py            # 200,000 calls x 7 interleaved rounds

On a worker thread (a thread carrying its worker's ``work_queue``, as Dramatiq's worker threads do,
after ``before_worker_boot``), three timings of the thread's CPU time per round (median and best):

* ``lookup``: ``WorkerRegistryMiddleware.worker_id()`` alone (a cached dict lookup);
* ``span without``: an SDK span started and given the process span's recorded attributes, ended;
* ``span with``: the same plus the lookup and ``messaging.client.id`` among the attributes;

the last two in alternating blocks of 200 spans. The median of the paired differences is the added
cost per recorded process (or worker-thread send) span;
unsampled spans skip both. The package's bar for new per-message work is 1 us.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import threading
import time
from typing import Any

from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import WorkerRegistryMiddleware


class _Nothing(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Worker:
    """What the registry reads of a ``dramatiq.Worker``."""

    def __init__(self) -> None:
        self.work_queue: queue.Queue[Any] = queue.Queue()
        self.worker_threads = 1
        self.queue_prefetch = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--blocks", type=int, default=100, help="pairs of 200-span blocks per round")
    args = parser.parse_args()

    registry = WorkerRegistryMiddleware()
    worker = _Worker()
    registry.before_worker_boot(StubBroker(), worker)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Nothing()))
    tracer = provider.get_tracer("bench")
    start = {semconv.MESSAGING_SYSTEM: semconv.SYSTEM, semconv.MESSAGING_DESTINATION_NAME: "default"}
    results: dict[str, list[float]] = {"lookup": [], "span without": [], "span with": []}

    def lookup(calls: int) -> None:
        for _ in range(calls):
            registry.worker_id()

    def span(calls: int, client_id: bool) -> None:
        for number in range(calls):
            started = tracer.start_span("process default", kind=SpanKind.CONSUMER, attributes=start)
            attributes: dict[str, Any] = {
                semconv.MESSAGING_MESSAGE_ID: str(number),
                semconv.DRAMATIQ_ACTOR_NAME: "add",
                semconv.DRAMATIQ_RETRY_COUNT: 0,
            }
            if client_id:
                found = registry.worker_id()
                if found is not None:
                    attributes[semconv.MESSAGING_CLIENT_ID] = found
            started.set_attributes(attributes)
            started.end()

    def timed(name: str, run: Any, calls: int) -> None:
        began = time.thread_time()  # this thread's CPU time: the shared machine's waits left out
        run(calls)
        results[name].append((time.thread_time() - began) / calls * 1e9)

    def rounds() -> None:
        threading.current_thread().work_queue = worker.work_queue  # type: ignore[attr-defined]
        assert registry.worker_id() is not None
        for index in range(args.rounds):
            timed("lookup", lookup, args.calls)
            for _ in range(args.blocks):  # short blocks, alternating which goes first: pairs
                first, second = (False, True) if index % 2 else (True, False)
                timed(f"span {'with' if first else 'without'}", lambda n, c=first: span(n, c), 200)
                timed(f"span {'with' if second else 'without'}", lambda n, c=second: span(n, c), 200)

    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
    for name, values in results.items():
        print(f"{name:>14}: median {statistics.median(values):8.0f} ns, best {min(values):8.0f} ns")
    pairs = [w - o for w, o in zip(results["span with"], results["span without"], strict=True)]
    added = statistics.median(pairs)
    print(f"{'added':>14}: {added:8.0f} ns per recorded span (median of {len(pairs)} pairs)")


if __name__ == "__main__":
    main()
