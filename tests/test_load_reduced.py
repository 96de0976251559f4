"""The reduced size of bench/load.py that CI runs: nothing lost, every message traced, no leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REDIS, require_service

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_load_through_redis_and_the_dramatiq_command_loses_nothing(tmp_path):
    require_service("Redis", REDIS)
    out = tmp_path / "load.json"
    result = subprocess.run(
        [
            *(sys.executable, "bench/load.py", "--messages", "3000", "--threads", "4", "--json", str(out)),
            *("--reference", "--reference-attributes", "--reference-metrics"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plain, traced, reference = json.loads(out.read_text())["results"]
    assert plain["processed"] == traced["processed"] == reference["processed"] == 3000
    assert (traced["send_spans"], traced["process_spans"], traced["context_leaks"]) == (3000, 3000, 0)
    # The hand-written reference (bench/minimal.py) makes the same spans and exports its metrics.
    assert (reference["mode"], reference["send_spans"], reference["process_spans"]) == ("minimal", 3000, 3000)
    assert reference["context_leaks"] == 0
    assert traced["metric_requests"] >= 1 and reference["metric_requests"] >= 1
