"""bench/overhead.py at a tiny size: every row and reference it documents is measured and reported.

No timing is asserted (speed lives in bench/ and docs/benchmarks.md); this keeps the script from rotting.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRAMATIQ_ROWS = [
    "baseline",
    "api",
    "sdk spans",
    "sdk metrics",
    "sdk spans+metrics",
    "sdk metrics, guide set",
    "sdk metrics, semconv set",
    "sdk spans 10% sampled",
    "sdk spans+metrics 10% sampled",
    "sdk spans+metrics 10% sampled, guide set",
    "no signals",
    "minimal middleware",
    "minimal + attributes",
    "minimal + attributes + metrics",
    "minimal + attributes + metrics, 10% sampled",
]
FLOORS = ["floor spans", "floor spans+attributes", "floor metrics", "floor spans+metrics"]


def test_overhead_reports_every_row_reference_and_target(tmp_path):
    out = tmp_path / "overhead.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/overhead.py",
            "--messages",
            "200",
            "--rounds",
            "1",
            "--quiet",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    other = importlib.util.find_spec("opentelemetry_instrumentor_dramatiq") is not None
    clients = importlib.util.find_spec("opentelemetry.instrumentation.redis") is not None
    client_rows = [
        "sdk spans, redis+pika instrumented",
        "sdk spans, redis+pika instrumented, broker spans shown",
    ]
    optional = (["other instrumentation, spans"] if other else []) + (client_rows if clients else [])
    expected = DRAMATIQ_ROWS + optional + FLOORS
    assert list(report["results"]) == expected
    for name, entry in report["results"].items():
        for phase in ("enqueue", "process"):
            assert entry[phase]["per_message_us"] > 0, (name, phase)
            assert ("added_us" in entry[phase]) == (name in DRAMATIQ_ROWS[1:] or name in optional), name
    assert isinstance(report["sampled_fraction_of_full"], float)
    assert isinstance(report["reference_sampled_fraction_of_full"], float)
    assert set(report["targets"]) >= {
        "api, enqueue: added <= 5 us",
        "api, process: added <= 5 us",
        "spans+metrics 10% sampled: added <= 0.35x full sampling",
    }
    assert "| minimal + attributes + metrics, 10% sampled |" in result.stdout
    assert "the hand-written reference, minimal + attributes + metrics:" in result.stdout
