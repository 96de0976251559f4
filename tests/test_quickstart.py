"""The README's demo runs with no service and shows the spans and the guide's counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_prints_traces_and_task_counts():
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
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
    counts = dict(
        line.strip().rsplit(" ", 1) for line in result.stderr.splitlines() if "dramatiq_tasks_total{" in line
    )
    assert counts == {
        'dramatiq_tasks_total{status="success",task_name="add"}': "1",
        'dramatiq_tasks_total{status="retry",task_name="flaky"}': "2",
        'dramatiq_tasks_total{status="success",task_name="flaky"}': "1",
        'dramatiq_tasks_total{status="retry",task_name="broken"}': "1",
        'dramatiq_tasks_total{status="failure",task_name="broken"}': "1",
    }
