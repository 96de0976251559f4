"""Per-message cost of tracking the message each worker thread holds (the registry's ``in_hand``).

Run::

    .venv/bin/python bench/in_hand.py            # 200,000 messages x 7 rounds, about 10 s
    .venv/bin/python bench/in_hand.py --quick    # 20,000 x 3

What is timed: the registry's two message hooks, as a worker thread calls them (this thread is mapped
to a registered worker, as a ``WorkerThread`` is through its ``work_queue``), over real Dramatiq
``MessageProxy`` objects:

* ``registry hooks, without in-hand``: ``before_process_message`` + ``after_process_message`` as they
  were before this state existed (progress only);
* ``registry hooks, with in-hand``: the hooks as shipped (progress, then the thread's message in hand
  stored with the process span and dropped), called with a span as the OpenTelemetry middleware calls
  them.

The two run interleaved, round by round, on the same thread, timed in that thread's CPU time
(``time.thread_time_ns``: a shared machine's other processes do not count, though they still slow the
caches); the figure is the difference of their medians (ns per message). The beat's cost of turning
the state into the record (per beat, not per message) is printed too, for 8 busy threads.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import WorkerRegistryMiddleware


class WithoutInHand(WorkerRegistryMiddleware):
    """The registry's message hooks without the in-hand state (progress only)."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        ident = threading.get_ident()
        progress = self._by_thread[ident] if ident in self._by_thread else self._thread_progress(ident)
        if progress is not None:
            progress.started(ident)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        ident = threading.get_ident()
        progress = self._by_thread[ident] if ident in self._by_thread else self._thread_progress(ident)
        if progress is not None:
            progress.ended(ident)


class FakeWorker:
    """What the registry reads of a ``dramatiq.Worker``."""

    def __init__(self) -> None:
        self.work_queue = object()
        self.worker_threads = 8
        self.consumer_whitelist = ["default"]


def setup(middleware: WorkerRegistryMiddleware, broker: Any) -> FakeWorker:
    worker = FakeWorker()
    middleware.before_worker_boot(broker, worker)  # maps the work queue (no beat thread started)
    return worker


def run_without(middleware: WorkerRegistryMiddleware, broker: Any, messages: list[Any], span: Any) -> int:
    before, after = middleware.before_process_message, middleware.after_process_message
    start = time.thread_time_ns()
    for message in messages:
        before(broker, message)
        after(broker, message)
    return time.thread_time_ns() - start


def run_with(middleware: WorkerRegistryMiddleware, broker: Any, messages: list[Any], span: Any) -> int:
    before, after = middleware.before_process_message, middleware.after_process_message
    start = time.thread_time_ns()
    for message in messages:
        before(broker, message, span)
        after(broker, message)
    return time.thread_time_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (20_000, 3) if args.quick else (200_000, 7)

    broker = StubBroker()
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="default")
    def task(n: int) -> None:
        pass

    messages = [MessageProxy(task.message(i)) for i in range(1000)] * (count // 1000)
    span = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)))
    without, with_ = WithoutInHand(), WorkerRegistryMiddleware()
    worker_without, worker_with = setup(without, broker), setup(with_, broker)
    thread = threading.current_thread()
    results: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):
        for name, middleware, worker, run in (
            ("without", without, worker_without, run_without),
            ("with", with_, worker_with, run_with),
        ):
            thread.work_queue = worker.work_queue  # type: ignore[attr-defined]
            middleware._by_thread.clear()
            results[name].append(run(middleware, broker, messages, span) / len(messages))
    del thread.work_queue  # type: ignore[attr-defined]

    base, full = statistics.median(results["without"]), statistics.median(results["with"])
    print(f"messages per round: {len(messages):,}, rounds: {rounds}")
    print(f"registry hooks, without in-hand: {base:7.1f} ns/message (median)")
    print(f"registry hooks, with in-hand:    {full:7.1f} ns/message (median)")
    print(f"in-hand cost per message:        {full - base:7.1f} ns ({full / base:.2f}x the hooks without it)")

    registry = with_._registries[id(worker_with)]
    for ident in range(8):  # 8 busy threads, as the beat sees them
        registry.in_hand.held[ident] = (time.time(), messages[ident], span)
    beats = [0.0] * 200
    for i in range(len(beats)):
        start = time.thread_time_ns()
        registry.in_hand.entries()
        beats[i] = (time.thread_time_ns() - start) / 1000
    print(f"beat, 8 messages in hand:        {statistics.median(beats):7.1f} us per beat (median)")


if __name__ == "__main__":
    main()
