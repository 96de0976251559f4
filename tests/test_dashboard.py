"""The Grafana dashboard of examples/grafana: what Grafana needs to load it, and its provisioning."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GRAFANA = EXAMPLES / "grafana"
DASHBOARD_PATH = GRAFANA / "dashboards" / "dramatiq.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
PROMETHEUS_DS = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}


def test_the_dashboard_has_what_grafana_needs_to_load_it():
    assert DASHBOARD["uid"] == "dramatiq-overview" and DASHBOARD["title"]
    assert DASHBOARD["schemaVersion"] >= 37  # Grafana 10+
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == PROMETHEUS_DS, panel["title"]
        assert panel["targets"] and panel["description"]
        for target in panel["targets"]:
            assert target["datasource"] == PROMETHEUS_DS
            assert target["refId"] and target["expr"]
    assert variables()["datasource"]["type"] == "datasource"
    assert variables()["datasource"]["query"] == "prometheus"


def test_panels_cover_the_issue_list():
    text = "\n".join(expr for _, expr in panel_queries())
    for metric in (
        "dramatiq_tasks_total",
        "dramatiq_task_duration_seconds_bucket",
        "dramatiq_queue_depth",
        "dramatiq_queue_delayed",
        "dramatiq_queue_dead_lettered",
        "dramatiq_queue_wait_duration_seconds_bucket",
        "dramatiq_worker_message_active",
        "dramatiq_worker_count",
        "dramatiq_retries_total",
        "dramatiq_dead_lettered_total",
    ):
        assert f"{metric}{{" in text, metric
    durations = [expr for _, expr in panel_queries() if "dramatiq_task_duration_seconds_bucket" in expr]
    assert [re.match(r"histogram_quantile\((0\.\d+)", expr)[1] for expr in durations] == [
        "0.5",
        "0.95",
        "0.99",
    ]


def test_task_and_queue_variables_filter_every_query():
    for name, metric in (("task_name", "dramatiq_tasks_total"), ("queue_name", "dramatiq_queue_depth")):
        variable = variables()[name]
        assert variable["datasource"] == PROMETHEUS_DS
        assert variable["query"]["query"] == f"label_values({metric}, {name})"
        assert variable["includeAll"] and variable["allValue"] == ".*"
    for title, expr in panel_queries():
        assert 'task_name=~"$task_name"' in expr or 'queue_name=~"$queue_name"' in expr, title


def test_duration_panels_show_exemplars_linked_to_jaeger():
    seconds = [panel for panel in panels() if panel["fieldConfig"]["defaults"]["unit"] == "s"]
    assert {panel["title"] for panel in seconds} == {"Task duration p50 / p95 / p99", "Queue wait p50 / p95"}
    assert all(target["exemplar"] is True for panel in seconds for target in panel["targets"])
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["jaeger"]["type"] == "jaeger"
    (link,) = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert link == {"name": "trace_id", "datasourceUid": "jaeger"}


def test_docker_compose_provisions_grafana_with_the_dashboard_and_prometheus_with_the_rules():
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())["services"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (dashboards_path,) = [entry["options"]["path"] for entry in provider["providers"]]
    assert f"./grafana/dashboards:{dashboards_path}:ro" in compose["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in compose["grafana"]["volumes"]
    prometheus = compose["prometheus"]
    assert "./prometheus/dramatiq-alerts.yml:/etc/prometheus/dramatiq-alerts.yml:ro" in prometheus["volumes"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["dramatiq-alerts.yml"]
