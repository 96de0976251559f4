"""Where a worker's CPU goes: sort ``py-spy record --format raw`` stacks into categories.

Run::

    .venv/bin/pip install py-spy
    .venv/bin/python bench/load.py --messages 30000 --profile /tmp/prof [--sampler-ratio 0.1]
    .venv/bin/python bench/profile_breakdown.py /tmp/prof/instrumented-*.txt [--cpu-us 850]

Samples are of the thread holding the GIL (``py-spy record --gil``); a worker process is bound by it.
Each sample goes to the first category below that has a frame in
it, so a histogram record made from one of our hooks counts as *metrics*, and what our hooks do
themselves (the frames left) as *our hooks*. With ``--cpu-us`` (the run's worker CPU per message,
printed by ``bench/load.py``) shares are also given in µs per message.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

#: (category, pattern matched against a frame's "function (file:line)"), first match wins.
CATEGORIES: list[tuple[str, str]] = [
    ("metrics: exemplars", r"opentelemetry/sdk/metrics/_internal/exemplar/"),
    (
        "metrics: export (collect, encode, send)",
        r"PeriodicExportingMetricReader|metric_exporter|opentelemetry/sdk/metrics/_internal/export/",
    ),
    ("metrics: recording (SDK)", r"opentelemetry/sdk/metrics/"),
    ("metrics: our counters (Tally)", r"opentelemetry_instrumentation_dramatiq_cfg/metrics.py"),
    ("spans: OTLP encoding", r"opentelemetry/exporter/otlp/proto/common/|SerializeToString"),
    ("spans: OTLP transport (HTTP/gRPC)", r"(^|[(/])(requests|urllib3|http|grpc)/|opentelemetry/exporter/"),
    (
        "spans: batch processor (queue, export thread)",
        r"opentelemetry/sdk/trace/export/|opentelemetry/sdk/_shared_internal/",
    ),
    ("spans: attributes", r"opentelemetry/attributes/"),
    ("spans: SDK span start/end (sampler, ids)", r"opentelemetry/sdk/trace/"),
    (
        "context propagation (inject/extract)",
        r"opentelemetry/(propagators|propagate|baggage)/|opentelemetry/trace/propagation/",
    ),
    ("context attach/detach", r"opentelemetry/context/"),
    ("API (get_current_span, get_tracer)", r"opentelemetry/(trace|metrics|instrumentation)/"),
    ("our hooks (own code)", r"opentelemetry_instrumentation_dramatiq_cfg/"),
    ("logging", r"logging/"),
    ("Redis client (broker fetch/ack, actor bookkeeping)", r"(^|[(/])redis/"),
    ("dramatiq (consumer, worker threads, message decode)", r"(^|[(/])dramatiq/|load_app"),
]
OTHER = "other (threads waiting, interpreter start-up)"
_compiled = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]


def categorize(stack: str) -> str:
    frames = stack.split(";")
    for name, pattern in _compiled:
        if any(pattern.search(frame) for frame in frames):
            return name
    return OTHER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--cpu-us", type=float, help="worker CPU per message of the run, in µs")
    args = parser.parse_args(argv)
    counts: collections.Counter[str] = collections.Counter()
    for path in args.files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[categorize(stack)] += int(count)
    total = sum(counts.values())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    header = "| category | share of worker CPU |" + (" µs per message |" if args.cpu_us else "")
    print(f"{total:,} samples from {len(args.files)} file(s)")
    print(header)
    print("|---|---:|" + ("---:|" if args.cpu_us else ""))
    order = [name for name, _ in CATEGORIES] + [OTHER]
    for name in order:
        share = counts[name] / total
        cell = f" {share * args.cpu_us:.0f} |" if args.cpu_us else ""
        print(f"| {name} | {share:.1%} |{cell}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
