"""The Prometheus alert rules of examples/prometheus: conventions, unit-test coverage, promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RULES = EXAMPLES / "prometheus" / "dramatiq-alerts.yml"
RULE_TESTS = EXAMPLES / "prometheus" / "dramatiq-alerts.test.yml"
DASHBOARD_URL = "http://localhost:3000/d/dramatiq-overview/dramatiq"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERTS = {rule["alert"]: rule for rule in alert_rules()}


def test_the_guides_concerns_each_have_a_rule():
    assert set(ALERTS) == {
        "DramatiqTaskFailureRatioHigh",
        "DramatiqTaskRetriesSurging",
        "DramatiqDeadLettersIncreasing",
        "DramatiqQueueDepthHigh",
        "DramatiqQueueWaitHigh",
        "DramatiqTaskDurationHigh",
        "DramatiqNoActiveWorker",
        "DramatiqWorkerStalled",
        "DramatiqMessageInHandTooLong",
        "DramatiqMetricsEndpointDown",
    }


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_rules_follow_the_monitoring_mixin_conventions(name):
    rule = ALERTS[name]
    assert re.fullmatch(r"Dramatiq(?:[A-Z][a-z]+)+", name)
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "dashboard_url"}
    assert annotations["dashboard_url"].startswith(DASHBOARD_URL)
    # the description names what the alert is about: the task or queue label its expression keeps
    for label in ("task_name", "queue_name"):
        if f"by ({label}" in rule["expr"] or f", {label})" in rule["expr"]:
            assert f"$labels.{label}" in annotations["description"], label


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_rule_has_unit_tests_that_fire_it_and_that_do_not(name):
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", ())
        if case["alertname"] == name
    ]
    assert any(case["exp_alerts"] for case in cases), "no case where it fires"
    assert any(not case["exp_alerts"] for case in cases), "no case where it stays silent"


def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    from .prometheus_server import require_binary

    promtool = require_binary("promtool")
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        result = subprocess.run(
            [promtool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_threshold_is_marked_once_and_documented_in_the_operations_page(name):
    marked = [line for line in ALERTS[name]["expr"].splitlines() if "# threshold:" in line]
    (row,) = [
        line
        for line in (RULES.parents[2] / "docs" / "operations.md").read_text().splitlines()
        if line.startswith(f"| `{name}` |")
    ]
    for line in marked:
        (value,) = re.findall(r">\s*([\d.]+)", line)
        assert re.search(rf"`(?:> )?{re.escape(value)}`", row), (value, row)
    if name in ("DramatiqNoActiveWorker", "DramatiqMetricsEndpointDown"):
        assert not marked
    else:
        assert marked
    for_ = ALERTS[name].get("for", "\N{EN DASH}")
    assert f"| {for_} |" in row
