"""Load: many messages through a real broker and the real ``dramatiq`` command, with and without
``opentelemetry-instrument``, in one run.

Run::

    .venv/bin/python bench/load.py                         # 100,000 messages, Redis, 2 processes x 8 threads
    .venv/bin/python bench/load.py --broker rabbitmq
    .venv/bin/python bench/load.py --messages 2000 --json out.json   # the reduced size CI runs
    .venv/bin/python bench/load.py --rounds 3 --reference   # medians of 3 alternating runs, + reference

Modes: *uninstrumented*; *instrumented* (this package, under ``opentelemetry-instrument``); with
``--reference``, *minimal*: the same SDK, exporter and ``opentelemetry-instrument`` start, with this
package disabled (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=dramatiq``) and ``bench/minimal.py``'s bare
span calls in its place: what any span-per-message instrumentation costs at least here
(``--reference-attributes``: the same spans carrying this package's span attributes;
``--reference-metrics``: and recording this package's default metrics, the same instruments and
attribute sets, written by hand). With
``--rounds R`` each mode runs R times, the order alternating from round to round, and the ratios are
of median throughputs. With ``--endpoint-faults``, *otlp-down* and *otlp-hanging*: instrumented workers
exporting to an endpoint that refuses connections / accepts them and never answers, with the SDK's
default bounded span queue (the producer still exports to the receiver); their throughput is
compared with the *instrumented* run's (target >= 0.9) and their process spans are not counted.
With ``--broker-clients``, two more instrumented modes for the broker-client instrumentations that
``opentelemetry-instrument`` loads when installed (``opentelemetry-instrumentation-redis`` and
``-pika``; the test extra installs both): *broker spans shown*
(``OTEL_PYTHON_DRAMATIQ_SUPPRESS_BROKER_SPANS=false``: Dramatiq's own broker traffic traced, as before
the quiet-broker change) and *no client instrumentations*
(``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis,pika``); *instrumented* is then this package with
them, suppressing that traffic. The ``other spans`` column counts every span that is neither a send
nor a process span (the broker clients', and the actor's own Redis call per message).

For each run, the script enqueues N messages with no worker
running, starts ``dramatiq bench.load_app --processes P --threads T`` (under ``opentelemetry-instrument``
for the instrumented modes, exporting OTLP/HTTP to a sink in this process that counts the spans it
receives), times the drain from the moment 10% of the messages are done (start-up, which differs
between the modes, is behind us) to the last one, stops the workers with SIGTERM, and checks:

* every message processed exactly once (a Redis set of message ids has N members);
* every message has its process span and its send span (the sink received N of each);
* no context leak: inside the actor, the current span's parent is the message's own send span;
* worker memory: RSS of each worker process when 10% of the messages are done and at the end
  (the growth reported is the largest of the worker processes).

Throughput = N / drain time; the ratio instrumented / uninstrumented is what docs/benchmarks.md reports (the
target is >= 0.9). Nothing here is a test assertion: the figures are printed (and written as JSON);
the exit code is 1 if a message was lost, processed twice, had no span, or saw a leaked context.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/0"


class SpanSink:
    """An OTLP receiver (HTTP/protobuf, and gRPC on a second port) that keeps trace requests and counts
    spans by name prefix afterwards; metric requests are counted, not kept.

    HTTP bodies are parsed only when counted, after a run, so the sink takes little CPU from the workers
    (gRPC requests are decoded by grpcio as they arrive).
    """

    def __init__(self) -> None:
        self.bodies: list[Any] = []  # bytes (HTTP) or decoded requests (gRPC)
        self.metric_requests = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink.lock:
                    if self.path.endswith("/v1/metrics"):
                        sink.metric_requests += 1
                    else:
                        if self.headers.get("Content-Encoding") == "gzip":
                            body = gzip.decompress(body)
                        sink.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.grpc_endpoint = self._start_grpc()

    def _start_grpc(self) -> str:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        sink = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                with sink.lock:
                    sink.bodies.append(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                with sink.lock:
                    sink.metric_requests += 1
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.grpc_server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.grpc_server)
        port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.grpc_server.start()
        return f"http://127.0.0.1:{port}"

    def take_counts(self) -> dict[str, int]:
        """Spans received since the last call, by the first word of their name; and metric requests."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        with self.lock:
            bodies, self.bodies = self.bodies, []
            metric_requests, self.metric_requests = self.metric_requests, 0
        counts = {"send": 0, "process": 0, "other": 0, "metric_requests": metric_requests}
        for body in bodies:
            if isinstance(body, bytes):
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
            else:
                request = body
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        word = span.name.split(" ", 1)[0]
                        counts[word if word in counts else "other"] += 1
        return counts


class HangingEndpoint:
    """A TCP server that accepts connections and never answers: an OTLP endpoint that hangs."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.accepted: list[socket.socket] = []
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return


def closed_endpoint() -> str:
    """An OTLP endpoint nobody listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


#: Modes whose workers export to a broken endpoint (``--endpoint-faults``).
FAULT_MODES = ("otlp-down", "otlp-hanging")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def run(
    mode: str,
    args: argparse.Namespace,
    sink: SpanSink,
    hanging: HangingEndpoint,
    overrides: dict[str, str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """One run of ``mode``; ``overrides``: environment of this mode's producer and workers (variants)."""
    namespace = f"otel-load-{uuid.uuid4().hex[:8]}"
    instrumented = mode != "uninstrumented"  # "instrumented", the "minimal" reference, or a fault mode
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOAD_BROKER": args.broker,
        "LOAD_NAMESPACE": namespace,
        "LOAD_REDIS_URL": REDIS_URL,
        "LOAD_INSTRUMENTED": "1" if instrumented else "0",
        "OTEL_SERVICE_NAME": "dramatiq-load",
        "OTEL_TRACES_EXPORTER": args.traces_exporter,
        "OTEL_METRICS_EXPORTER": args.metrics_exporter,
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": str(args.metric_export_interval),
        "OTEL_EXPORTER_OTLP_PROTOCOL": args.protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.grpc_endpoint if args.protocol == "grpc" else sink.endpoint,
        "OTEL_BSP_MAX_QUEUE_SIZE": str(max(2048, args.messages * 2)),
        # Not set for "none": the gRPC exporter refuses that value (no compression is its default).
        **({"OTEL_EXPORTER_OTLP_COMPRESSION": args.compression} if args.compression != "none" else {}),
        **(dict(args.env) if instrumented else {}),
        **(overrides or {}),
    }
    grpc = env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    if grpc and "OTEL_EXPORTER_OTLP_ENDPOINT" not in (overrides or {}):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.grpc_endpoint  # a variant that switches to gRPC
    if mode == "minimal":
        env.update(LOAD_MINIMAL="1", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="dramatiq")
        env["LOAD_MINIMAL_ATTRIBUTES"] = "1" if args.reference_attributes else "0"
        env["LOAD_MINIMAL_METRICS"] = "1" if args.reference_metrics else "0"
    # The workers of a fault mode export to a broken endpoint with the SDK's default (bounded) queue;
    # the producer still exports to the sink.
    worker_env = dict(env)
    if mode in FAULT_MODES:
        broken = closed_endpoint() if mode == "otlp-down" else hanging.endpoint
        worker_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = broken
        del worker_env["OTEL_BSP_MAX_QUEUE_SIZE"]
    client = redis.Redis.from_url(REDIS_URL)
    sink.take_counts()

    # Enqueue with the producer side instrumented the same way (a subprocess, like a web app would).
    producer = [sys.executable, "-c", _PRODUCER, str(args.messages)]
    if instrumented:
        producer = [str(BIN / "opentelemetry-instrument"), *producer]
    subprocess.run(producer, env=env, check=True, cwd=ROOT)

    worker = [
        str(BIN / "dramatiq"),
        "bench.load_app",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
    ]
    if instrumented:
        worker = [str(BIN / "opentelemetry-instrument"), *worker]
    # The workers' logs go to a file: a pipe nobody reads would block them once full.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, once read
    process = subprocess.Popen(worker, env=worker_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    rss_early: dict[int, int] = {}
    profilers: list[subprocess.Popen[bytes]] = []
    cpu_early: dict[int, float] = {}
    redis_cpu_early = 0.0
    first_tenth = args.messages // 10
    started = done_at_start = 0
    try:
        done = 0
        deadline = time.monotonic() + args.timeout
        while done < args.messages and time.monotonic() < deadline:
            time.sleep(0.02)
            done = client.scard(f"{namespace}:done")
            if not rss_early and done >= first_tenth:  # steady state: start-up is behind us
                started, done_at_start = time.perf_counter(), done
                rss_early = {pid: rss_kib(pid) for pid in children(process.pid)}
                cpu_early = {pid: cpu_seconds(pid) for pid in rss_early}
                if args.profile:
                    profilers = start_profilers(args, name or mode, list(rss_early))
                redis_cpu_early = redis_cpu_seconds(client)
        elapsed = time.perf_counter() - started
        rss_end = {pid: rss_kib(pid) for pid in children(process.pid)}
        worker_cpu = sum(cpu_seconds(pid) - cpu for pid, cpu in cpu_early.items())
        redis_cpu = redis_cpu_seconds(client) - redis_cpu_early
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        for profiler in profilers:  # py-spy writes its profile when the worker exits
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        log.seek(0)
        log_lines = log.read().decode(errors="replace").splitlines()
        log.close()
    spans = sink.take_counts()  # the workers have exited: their shutdown flush is in
    # CPU each worker process had used when it stopped (after its flush), written by bench/load_app.py.
    cpu_exit = {int(pid): float(value) for pid, value in client.hgetall(f"{namespace}:cpu").items()}
    worker_cpu_to_exit = sum(cpu_exit[pid] - cpu for pid, cpu in cpu_early.items() if pid in cpu_exit)
    sampled = "OTEL_TRACES_SAMPLER" in env
    leaks = int(client.get(f"{namespace}:leaks") or 0)
    for key in client.scan_iter(match=f"{namespace}*"):
        client.delete(key)
    if args.broker == "rabbitmq":
        subprocess.run([sys.executable, "-c", _DELETE_QUEUES, namespace], check=False)
    counted = max(done - done_at_start, 1)
    growth = max((rss_end.get(pid, 0) - kib for pid, kib in rss_early.items()), default=0)
    return {
        "mode": mode,
        "messages": args.messages,
        "processed": done,
        "seconds": round(elapsed, 3),
        "throughput": round((done - done_at_start) / elapsed, 1),
        "send_spans": spans["send"],
        "process_spans": spans["process"],
        "other_spans": spans["other"],
        "sampled": sampled,
        "metric_requests": spans["metric_requests"],
        "context_leaks": leaks,
        "rss_growth_kib": growth,
        "worker_log_lines": len(log_lines),  # e.g. the exporter's warnings in the fault modes
        # CPU the worker processes and the Redis server spent per message over the same window.
        "worker_cpu_us_per_message": round(worker_cpu / counted * 1e6, 1),
        # The same up to the workers' exit: spans still queued at the end are encoded and sent then.
        "worker_cpu_to_exit_us_per_message": round(worker_cpu_to_exit / counted * 1e6, 1),
        "redis_cpu_us_per_message": round(redis_cpu / counted * 1e6, 1),
    }


def start_profilers(args: argparse.Namespace, mode: str, pids: list[int]) -> list[subprocess.Popen[bytes]]:
    """``py-spy record --gil`` of each worker process from now until it exits (its shutdown flush
    included, like the CPU per message to exit): the thread holding the GIL (a worker process is
    bound by it), wherever it is, export threads included.

    Raw (collapsed) stacks go to ``<profile dir>/<mode>-<pid>.txt``; ``bench/profile_breakdown.py``
    sorts them into categories.
    """
    args.profile.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in mode)
    return [
        subprocess.Popen(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--nonblocking",
                "--gil",
                "--full-filenames",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(args.profile / f"{slug}-{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


#: ``--broker-clients``: today's broker traffic shown, and the broker-client instrumentations left out.
BROKER_CLIENT_MODES = {
    "broker spans shown": {"OTEL_PYTHON_DRAMATIQ_SUPPRESS_BROKER_SPANS": "false"},
    "no client instrumentations": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis,pika"},
}


def sampler_env(ratio: float) -> dict[str, str]:
    """Head sampling of a fraction of traces, with the SDK's standard variables."""
    return {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}"}


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, sep, assignments = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:NAME=VALUE[,...], got {text!r}")
    return name, dict(_assignment(item) for item in assignments.split(",") if item)


_PRODUCER = """
import sys
import bench.load_app as app
n = int(sys.argv[1])
for i in range(n):
    app.load_task.send(i)
from opentelemetry import trace
flush = getattr(trace.get_tracer_provider(), "force_flush", None)
if flush:
    flush()
"""

_DELETE_QUEUES = """
import sys, pika
name = sys.argv[1]
connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
channel = connection.channel()
for queue in (name, name + ".DQ", name + ".XQ"):
    channel.queue_delete(queue)
connection.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the drain")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--traces-exporter", default="otlp", help="OTEL_TRACES_EXPORTER of the workers")
    parser.add_argument(
        "--metrics-exporter",
        default="otlp",
        help="OTEL_METRICS_EXPORTER of the instrumented processes (otlp, to the same receiver; none)",
    )
    parser.add_argument(
        "--metric-export-interval",
        type=int,
        default=5000,
        help="OTEL_METRIC_EXPORT_INTERVAL in ms (5000: twelve times the SDK's default of 60 s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy record every worker process of each run once 10%% are done (pip install py-spy)",
    )
    parser.add_argument("--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf")
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_assignment,
        metavar="NAME=VALUE",
        help="environment of every instrumented mode (e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048); repeatable",
    )
    parser.add_argument(
        "--sampler-ratio",
        type=float,
        help="also run 'instrumented R': OTEL_TRACES_SAMPLER=parentbased_traceidratio, _ARG=R",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=_variant,
        metavar="NAME:NAME=VALUE[,NAME=VALUE...]",
        help="also run an instrumented mode with this environment (e.g. 'guide set:"
        "OTEL_PYTHON_DRAMATIQ_METRICS_SET=guide'); repeatable, ratios against uninstrumented",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode, alternating (medians)")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run bench/minimal.py's bare span calls instead of this package (same SDK and export)",
    )
    parser.add_argument(
        "--endpoint-faults",
        action="store_true",
        help="also run instrumented workers exporting to an OTLP endpoint that is down, then one that hangs",
    )
    parser.add_argument(
        "--broker-clients",
        action="store_true",
        help="also run 'broker spans shown' (suppression off) and 'no client instrumentations' (redis, pika)",
    )
    parser.add_argument(
        "--reference-attributes",
        action="store_true",
        help="with --reference: the reference spans carry this package's span attributes",
    )
    parser.add_argument(
        "--reference-metrics",
        action="store_true",
        help="with --reference: the reference also records this package's default metrics by hand",
    )
    args = parser.parse_args()

    if args.messages <= 0 or args.rounds <= 0:
        parser.error("--messages and --rounds must be positive")

    sink, hanging = SpanSink(), HangingEndpoint()
    variants: dict[str, dict[str, str]] = {}
    if args.sampler_ratio is not None:
        variants[f"instrumented {args.sampler_ratio:g} sampled"] = sampler_env(args.sampler_ratio)
    for name, overrides in args.variant:
        variants[name] = overrides
    if args.broker_clients:
        variants.update(BROKER_CLIENT_MODES)
    modes = ["uninstrumented", "instrumented", *variants] + (["minimal"] if args.reference else [])
    modes += list(FAULT_MODES) if args.endpoint_faults else []
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for round_index in range(args.rounds):  # alternate the order: no mode always runs first
        for mode in modes if round_index % 2 == 0 else modes[::-1]:
            if mode in variants:
                result = run("instrumented", args, sink, hanging, variants[mode], mode)
                result["mode"] = mode
            else:
                result = run(mode, args, sink, hanging)
            runs[mode].append(result)
    results = [r for mode in modes for r in runs[mode]]
    throughput = {mode: statistics.median(r["throughput"] for r in runs[mode]) for mode in modes}
    ratios = {
        mode: throughput[mode] / throughput["uninstrumented"] if throughput["uninstrumented"] else 0.0
        for mode in modes[1:]
    }
    header = f"{args.messages:,} messages, {args.broker}, {args.processes} processes x {args.threads} threads"
    print(f"{header}, {args.rounds} round(s)")
    print(
        "| mode | processed | s | msg/s | send spans | process spans | other spans | leaks "
        "| worker RSS growth | worker CPU µs/msg (drain / to exit) | Redis CPU µs/msg | metric exports |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        growth = r["rss_growth_kib"] / 1024
        print(
            f"| {r['mode']} | {r['processed']:,} | {r['seconds']} | {r['throughput']:,} "
            f"| {r['send_spans']:,} | {r['process_spans']:,} | {r['other_spans']:,} | {r['context_leaks']} "
            f"| {growth:.1f} MiB "
            f"| {r['worker_cpu_us_per_message']} / {r['worker_cpu_to_exit_us_per_message']} "
            f"| {r['redis_cpu_us_per_message']} | {r['metric_requests']} |"
        )
    for mode in modes[1:]:
        if mode not in FAULT_MODES:
            print(f"throughput {mode} / uninstrumented (medians): {ratios[mode]:.2f}")
    if args.reference:
        ratio = ratios["instrumented / minimal"] = throughput["instrumented"] / throughput["minimal"]
        print(f"throughput instrumented / minimal reference (medians): {ratio:.2f}")
    for mode in FAULT_MODES if args.endpoint_faults else ():
        ratio = ratios[f"{mode} / instrumented"] = throughput[mode] / throughput["instrumented"]
        print(f"throughput {mode} / instrumented (medians): {ratio:.2f} (target >= 0.9)")
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "median_throughput": throughput, "ratios": ratios}, indent=2)
        )
    traced = [r for r in results if r["mode"] != "uninstrumented"]
    every = [r for r in traced if not r["sampled"]]
    exported = [r for r in every if r["mode"] not in FAULT_MODES]  # fault modes export nothing
    failed = (
        any(r["processed"] != args.messages for r in results)
        or any(r["send_spans"] < args.messages for r in every)
        or any(r["process_spans"] < args.messages for r in exported)
        # Sampled modes: each sampled send has its process span (parent-based), and nothing else.
        or any(r["process_spans"] != r["send_spans"] or not r["send_spans"] for r in traced if r["sampled"])
        or any(r["context_leaks"] for r in traced)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
