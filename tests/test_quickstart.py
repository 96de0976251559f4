"""The README's demo runs with no service and shows the traces and the guide's counts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COUNTS = {
    'dramatiq_tasks_total{status="success",task_name="add"}': "1",
    'dramatiq_tasks_total{status="retry",task_name="flaky"}': "2",
    'dramatiq_tasks_total{status="success",task_name="flaky"}': "1",
    'dramatiq_tasks_total{status="retry",task_name="broken"}': "1",
    'dramatiq_tasks_total{status="failure",task_name="broken"}': "1",
}


def run_demo(*arguments: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def counts(output: str) -> dict[str, str]:
    return dict(
        line.strip().rsplit(" ", 1) for line in output.splitlines() if "dramatiq_tasks_total{" in line
    )


def tree(output: str) -> list[str]:
    """The trace's lines with durations and the trace id replaced by placeholders."""
    lines = output.split("\n\n")[0].splitlines()
    assert re.fullmatch(r"trace [0-9a-f]{32}", lines[0])
    return [re.sub(r"  \d+\.\d ms", "  <ms>", line) for line in lines[1:]]


def test_the_demo_prints_each_trace_as_a_tree_then_the_task_counts():
    result = run_demo()
    assert tree(result.stdout) == [
        "  quickstart.request  <ms>",
        "  ├─ send default [add] PRODUCER  <ms>",
        "  │  └─ process default [add] attempt 1 CONSUMER link→parent  <ms>  success",
        "  │     └─ add.compute  <ms>",
        "  ├─ send default [flaky] PRODUCER  <ms>",
        "  │  ├─ process default [flaky] attempt 1 CONSUMER link→parent  <ms>  retry  ERROR ConnectionError: "
        "attempt 1 for data 42 failed, will retry",
        "  │  │  └─ send default [flaky] (retry) CLIENT link→send default [flaky]  <ms>",
        "  │  ├─ process default [flaky] attempt 2 CONSUMER link→parent  <ms>  retry  ERROR ConnectionError: "
        "attempt 2 for data 42 failed, will retry",
        "  │  │  └─ send default [flaky] (retry) CLIENT link→send default [flaky]  <ms>",
        "  │  └─ process default [flaky] attempt 3 CONSUMER link→parent  <ms>  success",
        "  └─ send default [broken] PRODUCER  <ms>",
        "     ├─ process default [broken] attempt 1 CONSUMER link→parent  <ms>  retry  ERROR ValueError: "
        "data 7 is corrupt",
        "     │  └─ send default [broken] (retry) CLIENT link→send default [broken]  <ms>",
        "     └─ process default [broken] attempt 2 CONSUMER link→parent  <ms>  failed  ERROR ValueError: "
        "data 7 is corrupt",
    ]
    assert result.stdout.count("\ntrace ") == 0  # one trace: every message was sent inside the request span
    assert counts(result.stdout) == COUNTS


def test_the_demo_prints_raw_spans_with_json():
    result = run_demo("--json")
    decoder, text, spans = json.JSONDecoder(), result.stdout, []
    while text.strip():
        span, end = decoder.raw_decode(text.lstrip())
        spans.append(span)
        text = text.lstrip()[end:]
    names = sorted(span["name"] for span in spans)
    # add: 1 attempt; flaky: 3 attempts (2 retries); broken: 2 attempts (1 retry), each retry re-sent.
    assert names.count("process default") == 6
    assert names.count("send default") == 3 + 3
    assert "add.compute" in names and "quickstart.request" in names
    processes = {span["context"]["span_id"]: span for span in spans if span["name"] == "process default"}
    sends = {span["context"]["span_id"] for span in spans if span["name"] == "send default"}
    assert all(span["parent_id"] in sends for span in processes.values())
    assert counts(result.stderr) == COUNTS
