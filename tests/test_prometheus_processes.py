"""The real ``dramatiq`` command with ``OTEL_METRICS_EXPORTER=dramatiq_prometheus``, scraped by a real
Prometheus server: one endpoint for every worker process, queried through Prometheus' HTTP API."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from .conftest import REDIS, require_service, unique
from .otlp_receiver import Receiver
from .prometheus_server import free_port, start_prometheus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SUCCESSES = 12
FAILING = 3
IDLE = 4
# The forkserver start method (the dramatiq command's default from Python 3.14) set before its main().
FORKSERVER = (
    "import multiprocessing, sys\n"
    "multiprocessing.set_start_method('forkserver')\n"
    "from dramatiq.cli import main\n"
    "sys.argv = ['dramatiq', *sys.argv[1:]]\n"
    "sys.exit(main())\n"
)
P95 = "histogram_quantile(0.95, sum by (le) (rate(dramatiq_task_duration_seconds_bucket[1m])))"
PRODUCER = (
    "import sys, tests.worker_app as app\n"
    "for i in range(int(sys.argv[1])):\n    app.double.send(i)\n"
    "for i in range(int(sys.argv[2])):\n    app.always_fails.send()\n"
    "for i in range(int(sys.argv[3])):\n    app.idle.send()\n"
)


def scraped_sum(url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name{labels}`` that ``url/metrics`` serves now."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        body = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/gRPC receiver for the workers' spans."""
    receiver = Receiver("grpc")
    yield receiver
    receiver.stop()


def command_env(namespace: str, metrics_exporter: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a command under ``opentelemetry-instrument`` exporting metrics to ``port``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WORKER_APP_NAMESPACE": namespace,
        "OTEL_METRICS_EXPORTER": metrics_exporter,
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_EXPORT_INTERVAL": "1",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **extra,
    }
    env.pop("OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SERVER", None)  # not the test process's, if any
    return env


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], log_path: Path, namespace: str
) -> Iterator[Popen[bytes]]:
    """``command`` with its output in ``log_path``; stopped with SIGTERM (killed if it hangs) after
    the block, the test's Redis keys deleted."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        client = redis.Redis(*REDIS)
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_one_endpoint_serves_every_worker_process_to_a_real_prometheus(start_method, tmp_path, receiver):
    require_service("Redis", REDIS)
    namespace = unique("otel-prom")
    client = redis.Redis(*REDIS)
    port = free_port()
    env = command_env(
        namespace,
        "dramatiq_prometheus",
        port,
        OTEL_SERVICE_NAME="worker",
        OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL="1",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="500",
    )
    arguments = ["tests.worker_app", "--processes", "2", "--threads", "2", "--queues", namespace]
    if start_method == "forkserver":
        command = [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", FORKSERVER, *arguments]
    else:
        command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), *arguments]
        if start_method == "spawn":
            command.append("--use-spawn")
    log_path = tmp_path / "workers.log"
    with (
        running(command, env, log_path, namespace) as workers,
        start_prometheus(
            tmp_path, [f"127.0.0.1:{port}"], extra_args=["--enable-feature=exemplar-storage"]
        ) as prometheus,
    ):
        started = time.time()
        # Both worker processes registered: they run with the SDK (a spawned one that lost it would not).
        deadline = time.monotonic() + 120
        while client.hlen(f"{namespace}:__otel_workers__") < 2:
            assert workers.poll() is None, "the command exited"
            assert time.monotonic() < deadline, "the worker processes did not boot"
            time.sleep(0.2)

        def produce(successes: int, failing: int, idle: int) -> None:
            subprocess.run(
                [sys.executable, "-c", PRODUCER, str(successes), str(failing), str(idle)],
                env={**env, "OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"},
                cwd=ROOT,
                check=True,
                timeout=120,
            )

        def total(status: str) -> float:
            result = prometheus.query(f'sum(dramatiq_tasks_total{{status="{status}"}})')
            return float(result[0]["value"][1]) if result else 0.0

        # Two batches: a rate needs the series to exist before it grows (a new series' first value
        # is not an increase for Prometheus).
        produce(SUCCESSES // 2, FAILING, IDLE)
        prometheus.wait_for(lambda: total("success") == SUCCESSES // 2, timeout=120)
        produce(SUCCESSES - SUCCESSES // 2, 0, 0)
        prometheus.wait_for(
            lambda: total("success") == SUCCESSES and total("failure") == FAILING, timeout=120
        )
        assert total("retry") == FAILING
        # Both processes did work, and the endpoint sums them (one series per label set).
        per_series = prometheus.query('dramatiq_tasks_total{status="success"}')
        assert len(per_series) == 1
        assert prometheus.value("sum(dramatiq_dead_lettered_total)") == FAILING
        assert prometheus.value("sum(dramatiq_retries_total)") == FAILING

        # The queue gauge is the broker's count, read once: not once per process.
        idle_queue = f"{namespace}-idle"
        assert client.llen(f"{namespace}:{idle_queue}") == IDLE
        depth = prometheus.wait_for(f'sum(dramatiq_queue_depth{{queue_name="{idle_queue}"}})', timeout=30)
        assert float(depth[0]["value"][1]) == IDLE
        assert len(prometheus.query(f'dramatiq_queue_depth{{queue_name="{idle_queue}"}}')) == 1

        def p95() -> float | None:
            value = prometheus.value(P95)
            return value if value is not None and math.isfinite(value) else None

        assert prometheus.wait_for(p95, timeout=60) >= 0

        # Exemplars: from the duration histogram to the trace of a real process span.
        exemplars = prometheus.wait_for(
            lambda: prometheus.query_exemplars(
                "dramatiq_task_duration_seconds_bucket", started - 60, time.time() + 60
            ),
            timeout=60,
        )
        trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
        assert trace_ids
        receiver.wait_for(
            lambda r: len(r.named(f"process {namespace}")) >= SUCCESSES + 2 * FAILING, timeout=60
        )
        process_traces = {span.trace_id for span in receiver.named(f"process {namespace}")}
        assert trace_ids <= process_traces

        # No scrape error, no duplicate sample, ever.
        (target,) = prometheus.targets()
        assert target["health"] == "up", target
        assert prometheus.value('up{job="dramatiq"}') == 1
        assert scraped_sum(prometheus.url, "prometheus_target_scrapes_sample_duplicate_timestamp_total") == 0
        assert scraped_sum(prometheus.url, "prometheus_target_scrapes_sample_out_of_order_total") == 0
        prometheus.stop()
        workers.send_signal(signal.SIGTERM)
        workers.wait(60)
    output = log_path.read_text()
    assert workers.returncode == 0, output
    assert "Failed to auto initialize" not in output and "Address already in use" not in output, output


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_the_standard_prometheus_exporter_under_the_command_is_named_as_the_problem(start_method, tmp_path):
    """The OTel exporter serves the main process only: the command says so, naming dramatiq_prometheus."""
    require_service("Redis", REDIS)
    namespace = unique("otel-std-prom")
    env = command_env(namespace, "prometheus", free_port())
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "dramatiq"), "tests.worker_app"]
    command += ["--processes", "2", "--threads", "1", "--queues", namespace]
    if start_method == "spawn":
        command.append("--use-spawn")
    log_path = tmp_path / "workers.log"
    with running(command, env, log_path, namespace) as workers:
        deadline = time.monotonic() + 120
        while "Worker process is ready" not in log_path.read_text() or (
            start_method == "fork" and log_path.read_text().count("dramatiq_prometheus") < 3
        ):
            assert workers.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(1)
    output = log_path.read_text()
    warnings = [
        line for line in output.splitlines() if "OTEL_METRICS_EXPORTER=prometheus under the dramatiq" in line
    ]
    if start_method == "fork":
        # The main process (which serves) and each forked worker process (whose series it never sees).
        assert len(warnings) == 3, output
    else:
        # Spawned workers fail to bind the port before any instrumentation loads (the SDK's own error);
        # the main process names the problem and the remedy.
        assert len(warnings) == 1, output
        assert "Address already in use" in output
    assert all("dramatiq_prometheus" in line for line in warnings)


@pytest.mark.slow
def test_gunicorn_workers_send_side_series_reach_one_endpoint(tmp_path):
    """Web processes: gunicorn's master serves, its forked workers (which alone import the app and send
    the messages) write, as the dramatiq command's do."""
    require_service("Redis", REDIS)
    namespace = unique("otel-web")
    client = redis.Redis(*REDIS)
    metrics_port, web_port = free_port(), free_port()
    env = command_env(namespace, "dramatiq_prometheus", metrics_port)
    command = [str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"), "--workers", "2"]
    command += ["--bind", f"127.0.0.1:{web_port}", "tests.web_app:app"]
    log_path = tmp_path / "gunicorn.log"
    requests = 40
    with running(command, env, log_path, namespace) as web:
        deadline = time.monotonic() + 60
        sent = 0
        while sent < requests:
            assert web.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10):
                    sent += 1
            except OSError:
                time.sleep(0.2)  # not listening yet
        assert client.llen(f"{namespace}:{namespace}") == requests

        def sent_total() -> float:
            return scraped_sum(
                f"http://127.0.0.1:{metrics_port}",
                "messaging_client_sent_messages_total",
                messaging_destination_name=namespace,
            )

        while sent_total() != requests:
            assert time.monotonic() < deadline, sent_total()
            time.sleep(0.3)
    assert "Address already in use" not in log_path.read_text()
