"""The alert rules and the dashboard's queries against a real Prometheus scraping a real workload.

One worker on the real Redis broker, instrumented with an SDK meter provider whose metrics are served by
the OpenTelemetry Prometheus exporter (``otel_scope_*`` labels included, as by default) on a free port;
Prometheus scrapes it every second with examples/prometheus/dramatiq-alerts.yml loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, start_http_server

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

from .conftest import cleanup_broker, make_broker, unique, wait_processed
from .prometheus_server import PrometheusServer, free_port, start_prometheus
from .test_dashboard import panel_queries

pytestmark = pytest.mark.slow

RULES = Path(__file__).resolve().parent.parent / "examples" / "prometheus" / "dramatiq-alerts.yml"


@dataclass
class Workload:
    prometheus: PrometheusServer
    queue_name: str
    tasks: dict[str, Any]

    def send_round(self) -> None:
        for _ in range(3):
            self.tasks["succeeds"].send()
        self.tasks["retried_once"].send()
        self.tasks["always_fails"].send()
        wait_processed(dramatiq.get_broker(), self.queue_name)


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    namespace = unique("otel-ops")
    queue_name = f"{namespace}-q"
    registry = CollectorRegistry()
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    instrumentor = DramatiqInstrumentor()
    instrumentor.instrument(
        meter_provider=meter_provider, tracer_provider=TracerProvider(), queue_metrics_interval=0.5
    )
    previous_broker = dramatiq.broker.global_broker  # module-scoped: conftest's per-test restore is too late
    broker = make_broker("redis", namespace)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    failed_once: set[str] = set()

    @dramatiq.actor(queue_name=queue_name)
    def succeeds() -> None:
        pass

    @dramatiq.actor(queue_name=queue_name, max_retries=3, min_backoff=50, max_backoff=100)
    def retried_once() -> None:
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        if message is None or message.message_id not in failed_once:
            failed_once.add(message.message_id if message else "")
            raise RuntimeError("first attempt fails")

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def always_fails() -> None:
        raise RuntimeError("always fails")

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    broker.add_middleware(dramatiq.middleware.CurrentMessage())
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    prometheus = start_prometheus(tmp_path_factory.mktemp("ops"), [f"127.0.0.1:{port}"], rule_files=[RULES])
    try:
        load = Workload(
            prometheus, queue_name, {f.actor_name: f for f in (succeeds, retried_once, always_fails)}
        )
        # Two rounds, each seen by Prometheus: counters must grow between scrapes for rate() and
        # increase() to have something to say (a series' first sample is not an increase).
        for expected in (1, 2):
            load.send_round()
            prometheus.wait_for(
                f'sum(dramatiq_tasks_total{{task_name="always_fails",status="failure"}}) >= {expected}'
            )
        yield load
    finally:
        prometheus.stop()
        worker.stop()
        server.shutdown()
        thread.join(5)
        instrumentor.uninstrument()
        cleanup_broker(broker, namespace)
        meter_provider.shutdown()
        dramatiq.broker.global_broker = previous_broker


def test_a_task_that_always_fails_fires_the_dead_letter_alert(workload: Workload):
    def firing() -> list[dict[str, Any]]:
        return [
            alert
            for alert in workload.prometheus.alerts()
            if alert["labels"]["alertname"] == "DramatiqDeadLettersIncreasing" and alert["state"] == "firing"
        ]

    (alert,) = workload.prometheus.wait_for(firing, timeout=60)
    assert alert["labels"] == {
        "alertname": "DramatiqDeadLettersIncreasing",
        "severity": "warning",
        "task_name": "always_fails",
        "queue_name": workload.queue_name,
    }
    assert (
        f"of task always_fails were moved to the dead-letter queue of {workload.queue_name}"
        in (alert["annotations"]["description"])
    )
    # and the rules that must stay silent on this workload do
    names = {alert["labels"]["alertname"] for alert in workload.prometheus.alerts()}
    assert not names & {"DramatiqNoActiveWorker", "DramatiqMetricsEndpointDown", "DramatiqQueueDepthHigh"}


@pytest.mark.parametrize(
    ("title", "expr"), panel_queries(), ids=[f"{t}:{e[:60]}" for t, e in panel_queries()]
)
def test_every_dashboard_query_returns_series(workload: Workload, title: str, expr: str):
    query = expr.replace("$__rate_interval", "1m").replace("$task_name", ".*").replace("$queue_name", ".*")
    result = workload.prometheus.query(query)
    assert result, f"{title}: no series for {query}"
    # the labels it groups by exist (a typo'd one would group everything under an empty value)
    grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
    for series in result:
        assert all(series["metric"].get(label) for label in grouped - {"le"}), (title, series)
    values = [float(series["value"][1]) for series in result]
    if "histogram_quantile" in expr or "/" in expr:
        assert any(not math.isnan(value) for value in values), (title, result)


@pytest.mark.parametrize(("name", "expected"), [("task_name", "always_fails"), ("queue_name", None)])
def test_dashboard_variables_list_the_workloads_tasks_and_queues(
    workload: Workload, name: str, expected: str | None
):
    from .test_dashboard import variables

    metric = variables()[name]["query"]["query"].removeprefix("label_values(").split(",")[0]
    values = workload.prometheus.api(f"label/{name}/values", **{"match[]": metric})
    assert (expected or workload.queue_name) in values
