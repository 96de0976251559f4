"""What the ``dramatiq_prometheus`` endpoint costs: one scrape over N processes x M actors, and one
snapshot write of a worker process.

Forks ``--processes`` children from a serving reader (as the ``dramatiq`` command forks its workers);
each records this package's instruments for ``--actors`` actors over ten queues (every status, the
three duration histograms with exemplars, in-flight) and writes its snapshot. Then the parent is
scraped ``--scrapes`` times over HTTP, in the Prometheus text format and in OpenMetrics. The
reference row is the OTel Prometheus exporter serving one process with the same actors.

    .venv/bin/python bench/scrape.py [--processes 16] [--actors 100] [--scrapes 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry_instrumentation_dramatiq_cfg.metrics import instruments_for
from opentelemetry_instrumentation_dramatiq_cfg.prometheus import DramatiqPrometheusMetricReader

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def record(provider: MeterProvider, actors: int) -> None:
    """One worker process's worth of measurements for ``actors`` actors, inside sampled spans."""
    instruments = instruments_for(provider)
    tracer = TracerProvider().get_tracer("bench")
    for index in range(actors):
        task = {"task_name": f"actor_{index}"}
        queue = f"queue_{index % 10}"
        semconv = {
            "messaging.system": "dramatiq",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
        }
        for status in ("success", "failure", "retry", "skipped"):
            instruments.tasks.add(3, {**task, "status": status})
        instruments.consumed_messages.add(12, semconv)
        instruments.in_flight.add(0, {"queue_name": queue})
        for duration in (0.003, 0.02, 0.2, 1.5):
            with trace.use_span(tracer.start_span("process"), end_on_exit=True):
                instruments.task_duration.record(duration, task)
                instruments.process_duration.record(duration, semconv)
                instruments.queue_wait.record(duration / 2, {**task, "queue_name": queue})


def get(port: int, accept: str | None) -> tuple[float, int]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept} if accept else {}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - start, len(body)


def timings(port: int, accept: str | None, scrapes: int) -> dict[str, float]:
    get(port, accept)  # warm-up
    results = [get(port, accept) for _ in range(scrapes)]
    seconds = sorted(r[0] for r in results)
    return {
        "median_ms": statistics.median(seconds) * 1000,
        "p95_ms": seconds[max(0, math.ceil(len(seconds) * 0.95) - 1)] * 1000,
        "bytes": results[-1][1],
    }


def multi_process(processes: int, actors: int, scrapes: int) -> dict[str, Any]:
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-scrape-")
    reader = DramatiqPrometheusMetricReader(
        host="127.0.0.1", port=port, directory=directory, export_interval=3600
    )
    provider = MeterProvider(metric_readers=[reader])
    children: list[tuple[int, int]] = []
    writes: list[float] = []
    for _ in range(processes):
        ready_read, ready_write = os.pipe()
        hold_read, hold_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_read)
            os.close(hold_write)
            for _, other in children:  # only the parent may keep an earlier child waiting
                os.close(other)
            record(provider, actors)
            provider.force_flush()  # the first write includes the exporter's warm-up
            start = time.perf_counter()
            provider.force_flush()  # one snapshot: collect, serialize, write
            os.write(ready_write, json.dumps(time.perf_counter() - start).encode())
            os.read(hold_read, 1)
            os._exit(0)
        os.close(ready_write)
        os.close(hold_read)
        writes.append(json.loads(os.read(ready_read, 64)))
        os.close(ready_read)
        children.append((pid, hold_write))
    size = sum(path.stat().st_size for path in Path(directory).glob("*.json"))
    try:
        return {
            "processes": processes,
            "actors": actors,
            "snapshot_write_ms": statistics.median(writes) * 1000,
            "snapshot_bytes_per_process": size // max(1, processes),
            "text": timings(port, None, scrapes),
            "openmetrics": timings(port, OPENMETRICS, scrapes),
        }
    finally:
        for pid, hold in children:
            os.close(hold)
            os.waitpid(pid, 0)
        provider.shutdown()


def otel_exporter_reference(actors: int, scrapes: int) -> dict[str, Any]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    record(provider, actors)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        return {"processes": 1, "actors": actors, "text": timings(port, None, scrapes)}
    finally:
        server.shutdown()
        provider.shutdown()


def per_message(messages: int, rounds: int) -> dict[str, float]:
    """CPU µs per message (send + process, metrics only, StubBroker, one worker thread) with this reader
    writing a snapshot every second, against an InMemoryMetricReader that is never collected: what the
    endpoint adds per message. Rounds alternate; medians."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

    def run(reader: Any) -> float:
        provider = MeterProvider(metric_readers=[reader])
        instrumentor = DramatiqInstrumentor()
        instrumentor.instrument(meter_provider=provider, traces_enabled=False, queue_metrics_enabled=False)
        broker = StubBroker()
        dramatiq.set_broker(broker)
        actor = dramatiq.actor(lambda: None, actor_name="cheap", queue_name="bench")
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
        worker.start()
        try:
            start = time.process_time()  # CPU of every thread, the reader's writer included
            for _ in range(messages):
                actor.send()
            broker.join("bench")
            worker.join()
            return (time.process_time() - start) / messages * 1e6
        finally:
            worker.stop()
            instrumentor.uninstrument()
            provider.shutdown()

    results: dict[str, list[float]] = {"in-memory reader": [], "dramatiq_prometheus (writing every 1 s)": []}
    for index in range(rounds):
        order = list(results) if index % 2 == 0 else list(reversed(results))
        for name in order:
            if name == "in-memory reader":
                results[name].append(run(InMemoryMetricReader()))
            else:
                # As in a worker process: a live serving process (here the parent shell) is announced.
                directory = tempfile.mkdtemp(prefix="bench-per-message-")
                os.environ["OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SERVER"] = f"{os.getppid()}:{directory}"
                reader = DramatiqPrometheusMetricReader(export_interval=1)
                assert reader.role == "write"
                del os.environ["OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SERVER"]
                results[name].append(run(reader))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--actors", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20_000, help="per-message rows (0: skip them)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [
        multi_process(1, args.actors, args.scrapes),
        multi_process(args.processes, args.actors, args.scrapes),
        otel_exporter_reference(args.actors, args.scrapes),
    ]
    costs = per_message(args.messages, args.rounds) if args.messages else {}
    if args.json:
        print(json.dumps({"scrapes": rows, "per_message_us": costs}, indent=2))
        return
    print("| Endpoint | processes x actors | scrape median | p95 | body | snapshot write per process |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        label = "dramatiq_prometheus" if "openmetrics" in row else "OTel Prometheus exporter (reference)"
        formats = [("text", row["text"])] + (
            [("OpenMetrics", row["openmetrics"])] if "openmetrics" in row else []
        )
        for name, timing in formats:
            write = f"{row['snapshot_write_ms']:.1f} ms" if "snapshot_write_ms" in row else ""
            print(
                f"| {label}, {name} | {row['processes']} x {row['actors']} | {timing['median_ms']:.1f} ms "
                f"| {timing['p95_ms']:.1f} ms | {timing['bytes'] // 1024} KiB | {write} |"
            )
    if costs:
        print()
        print("| Metrics reader (send + process, metrics only) | CPU µs per message |")
        print("|---|---:|")
        for name, cost in costs.items():
            print(f"| {name} | {cost:.1f} |")


if __name__ == "__main__":
    main()
