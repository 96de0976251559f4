"""Re-make the pictures of the docs from real runs, with Debian's headless Chromium.

    python docs/pictures/make_pictures.py trace        # docs/trace-tree.png
    python docs/pictures/make_pictures.py prometheus   # docs/prometheus-graphs.png (about 4 minutes)

``trace``: runs ``examples/quickstart.py --json``, draws its spans on a time line as Jaeger's trace
view does (one row per span, indented under its parent, a bar from its start to its end, red where
the span's status is ERROR) as an HTML page, and screenshots it.

``prometheus``: a Dramatiq worker in this process (StubBroker, two threads, instrumented, metrics
served by the OpenTelemetry Prometheus exporter on a free port) runs a workload of bursts for
``--minutes`` while a real Prometheus (``prometheus`` on the PATH, Debian's package) scrapes it
every second; then Prometheus' own graph page draws three of the Grafana dashboard's queries
(throughput by task and status, task duration p95, queue depth) and is screenshotted.

Needs ``chromium`` (Debian's package) and the test extras (``pip install -e '.[test]'``). Everything
listens on 127.0.0.1 and is stopped at the end. Look at the pictures before committing them.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def screenshot(url: str, output: Path, width: int, height: int, wait_ms: int = 5000, scale: int = 1) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--force-device-scale-factor={scale}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={output}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {output.relative_to(ROOT)}")


# --- trace ---------------------------------------------------------------------------------------


def demo_spans() -> list[dict[str, Any]]:
    printed = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--json"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    decoder, spans = json.JSONDecoder(), []
    while printed.strip():
        span, end = decoder.raw_decode(printed.lstrip())
        spans.append(span)
        printed = printed.lstrip()[end:]
    return spans


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _label(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    label = span["name"]
    if "messaging.dramatiq.actor.name" in attributes:
        label += f" [{attributes['messaging.dramatiq.actor.name']}]"
    if span["name"].startswith("process"):
        label += f" attempt {attributes.get('messaging.dramatiq.message.retries', 0) + 1}"
    if attributes.get("messaging.dramatiq.reenqueue"):
        label += " (retry)"
    return label


def trace_page(spans: list[dict[str, Any]]) -> str:
    by_id = {span["context"]["span_id"]: span for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in by_id else None
        children.setdefault(parent, []).append(span)
    for group in children.values():
        group.sort(key=lambda span: _seconds(span["start_time"]))
    start = min(_seconds(span["start_time"]) for span in spans)
    total = max(_seconds(span["end_time"]) for span in spans) - start
    rows: list[str] = []

    def add(span: dict[str, Any], depth: int) -> None:
        begin = (_seconds(span["start_time"]) - start) / total * 84  # room for the last note
        width = max((_seconds(span["end_time"]) - _seconds(span["start_time"])) / total * 84, 0.25)
        error = span["status"]["status_code"] == "ERROR"
        kind = span["kind"].removeprefix("SpanKind.")
        outcome = span["attributes"].get("messaging.dramatiq.outcome", "")
        duration = (_seconds(span["end_time"]) - _seconds(span["start_time"])) * 1000
        rows.append(
            f'<div class="row"><div class="name" style="padding-left:{depth * 18 + 8}px">'
            f"{html.escape(_label(span))} <span class=kind>{kind}</span></div>"
            f'<div class="lane"><div class="bar {"error" if error else kind.lower()}" '
            f'style="left:{begin:.2f}%;width:{width:.2f}%"></div>'
            f'<span class="note" style="left:calc({begin + width:.2f}% + 6px)">{duration:.1f} ms'
            f"{' · ' + html.escape(outcome) if outcome else ''}</span></div></div>"
        )
        for child in children.get(span["context"]["span_id"], []):
            add(child, depth + 1)

    for root in children[None]:
        add(root, 0)
    ticks = "".join(
        f'<span class="tick" style="left:{i * 21}%">{total * 1000 * i / 4:.0f} ms</span>' for i in range(5)
    )
    return f"""<!doctype html><meta charset="utf-8"><style>
* {{ box-sizing: border-box; }}
body {{ font: 13px/1.2 sans-serif; margin: 16px; color: #222; background: #fff; }}
h1 {{ font-size: 16px; margin: 0 0 4px; }}
.legend {{ margin: 0 0 10px; color: #555; }}
.row, .axis {{ display: flex; border-bottom: 1px solid #eee; height: 26px; align-items: center; }}
.name {{ width: 360px; flex: none; white-space: nowrap; overflow: hidden; }}
.kind {{ color: #888; font-size: 11px; }}
.lane {{ position: relative; flex: 1; height: 26px; border-left: 1px solid #ddd; }}
.bar {{ position: absolute; top: 7px; height: 12px; border-radius: 2px; }}
.producer, .client {{ background: #3b82c4; }}
.consumer {{ background: #2e9e5b; }} .internal {{ background: #8a8a8a; }}
.error {{ background: #d43b3b; }}
.note {{ position: absolute; top: 6px; font-size: 11px; color: #555; white-space: nowrap; }}
.tick {{ position: absolute; font-size: 11px; color: #888; padding-left: 3px; border-left: 1px solid #ccc; }}
</style>
<h1>Trace of examples/quickstart.py: {len(spans)} spans, {total * 1000:.0f} ms</h1>
<p class="legend">blue: send (PRODUCER; CLIENT for a re-send) · green: process (CONSUMER) ·
red: status ERROR · grey: INTERNAL</p>
<div class="axis"><div class="name"><b>Span</b></div><div class="lane">{ticks}</div></div>
{"".join(rows)}
"""


def make_trace(output: Path) -> None:
    spans = demo_spans()
    with tempfile.TemporaryDirectory() as directory:
        page = Path(directory) / "trace.html"
        page.write_text(trace_page(spans))
        screenshot(page.as_uri(), output, 1100, 27 * len(spans) + 110, wait_ms=1000, scale=2)


# --- prometheus ----------------------------------------------------------------------------------

QUERIES = [
    # The dashboard's main panels (examples/grafana/dashboards/dramatiq.json), variables left out.
    "sum by (task_name, status) (rate(dramatiq_tasks_total[1m]))",
    "histogram_quantile(0.95, sum by (task_name, le) (rate(dramatiq_task_duration_seconds_bucket[1m])))",
    "max by (queue_name) (dramatiq_queue_depth)",
]


def run_workload(minutes: float) -> tuple[Any, Any]:
    """A worker and its metrics endpoint, busy for ``minutes``; returns (prometheus, cleanup)."""
    sys.path.insert(0, str(ROOT))
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.middleware import CurrentMessage
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry, start_http_server

    from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor
    from tests.prometheus_server import free_port, start_prometheus

    logging.getLogger("dramatiq").setLevel(logging.CRITICAL)  # the failing attempts are on purpose
    registry = CollectorRegistry()
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    instrumentor = DramatiqInstrumentor()
    instrumentor.instrument(
        meter_provider=meter_provider, tracer_provider=TracerProvider(), queue_metrics_interval=1
    )
    broker = StubBroker()
    broker.add_middleware(CurrentMessage())
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="emails")
    def send_email() -> None:
        time.sleep(random.uniform(0.005, 0.03))

    @dramatiq.actor(queue_name="reports", max_retries=2, min_backoff=100, max_backoff=200)
    def build_report() -> None:
        time.sleep(random.uniform(0.2, 0.8))
        if random.random() < 0.2:
            raise RuntimeError("report source unavailable")

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    prometheus = start_prometheus(Path(tempfile.mkdtemp()), [f"127.0.0.1:{port}"])
    deadline = time.monotonic() + minutes * 60
    burst = 0
    while time.monotonic() < deadline:
        burst += 1
        for _ in range(random.randint(20, 60) if burst % 4 == 0 else random.randint(3, 10)):
            send_email.send()
        for _ in range(random.randint(4, 12) if burst % 3 == 0 else 1):
            build_report.send()
        time.sleep(5)

    def cleanup() -> None:
        prometheus.stop()
        worker.stop()
        server.shutdown()
        thread.join(5)
        instrumentor.uninstrument()
        meter_provider.shutdown()

    return prometheus, cleanup


def make_prometheus(output: Path, minutes: float) -> None:
    prometheus, cleanup = run_workload(minutes)
    try:
        params: dict[str, str] = {}
        for index, query in enumerate(QUERIES):
            params.update(
                {
                    f"g{index}.expr": query,
                    f"g{index}.tab": "0",
                    f"g{index}.range_input": f"{max(int(minutes) + 1, 5)}m",
                    f"g{index}.show_exemplars": "0",
                }
            )
        url = f"{prometheus.url}/graph?{urllib.parse.urlencode(params)}"
        screenshot(url, output, 1400, 2500, wait_ms=15000)
    finally:
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("picture", choices=["trace", "prometheus"])
    parser.add_argument("--minutes", type=float, default=4.0, help="workload length (prometheus)")
    arguments = parser.parse_args()
    if arguments.picture == "trace":
        make_trace(DOCS / "trace-tree.png")
    else:
        make_prometheus(DOCS / "prometheus-graphs.png", arguments.minutes)


if __name__ == "__main__":
    main()
