"""Cost of the admin monitoring page on the real Redis and PostgreSQL, against the health view.

Run::

    .venv/bin/python bench/monitoring_page.py        # 100 queues, 1,000 task records, 200 requests

The script creates its own PostgreSQL database (from ``tests.django_settings``, dropped at the end)
and Redis namespace, declares the queues (5 pending messages each), registers two workers, writes the
records (a third of them permanent failures, spread over the last day) and logs a staff user in.
It then alternates requests to the page and to the health view with details (the same single broker
read, as JSON): median and p95 of each, their ratio, Redis round trips and SQL queries per page view.
Nothing is asserted; the figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.redis_round_trips import count_round_trips

PAGE = "/admin/dramatiq_otel/monitoring/"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()

    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_settings"
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    settings.ALLOWED_HOSTS = ["testserver"]  # no setup_test_environment(): templates render as in production
    connection.settings_dict["TEST"]["NAME"] = f"bench_monitoring_{uuid.uuid4().hex[:8]}"
    original_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(original_name, verbosity=0)


def run(args: argparse.Namespace) -> None:
    import dramatiq
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from dramatiq.brokers.redis import RedisBroker

    from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord
    from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import WorkerRegistry

    settings.DRAMATIQ_HEALTH = {"DETAILS": "staff", "TRACE_URL": "http://localhost:16686/trace/{trace_id}"}
    round_trips_so_far = count_round_trips()

    namespace = f"otel-bench-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(namespace=namespace)
    dramatiq.set_broker(broker)
    try:
        for i in range(args.queues):
            broker.declare_queue(f"q{i}")
            for _ in range(5):
                broker.enqueue(dramatiq.Message(f"q{i}", "bench", (), {}, {}))
        for threads in (4, 8):
            worker = type("BenchWorker", (), {"worker_threads": threads, "consumer_whitelist": None})()
            WorkerRegistry(broker, worker)._write()
        now = timezone.now()
        TaskRecord.objects.bulk_create(
            TaskRecord(
                actor_name=f"actor_{i % 20}",
                queue_name=f"q{i % args.queues}",
                duration=(i % 97) / 10,
                outcome="failed" if i % 3 == 0 else "success",
                retries=3 if i % 3 == 0 else 0,
                message_id=str(uuid.uuid4()),
                trace_id=uuid.uuid4().hex,
                timestamp=now - timedelta(seconds=86_000 * i / args.records),
                exception_type="ValueError" if i % 3 == 0 else "",
                exception_message="invoice total does not match its lines " * 5 if i % 3 == 0 else "",
            )
            for i in range(args.records)
        )
        client = Client()
        client.force_login(User.objects.create_superuser("ops", "ops@example.com", "x"))

        page = client.get(PAGE)  # warm: the reader connects, templates compile
        assert page.status_code == 200 and page.content.count(b"<tr>") > args.queues, page.status_code
        assert len(client.get("/health/?details=1").json()["queues"]) == args.queues
        before = round_trips_so_far()
        with CaptureQueriesContext(connection) as queries:
            client.get(PAGE)
        round_trips = round_trips_so_far() - before
        statements = [q for q in queries if "SAVEPOINT" not in q["sql"]]

        page_ms: list[float] = []
        health_ms: list[float] = []
        for _ in range(args.requests):
            for url, timings in ((PAGE, page_ms), ("/health/?details=1", health_ms)):
                start = time.perf_counter()
                client.get(url)
                timings.append((time.perf_counter() - start) * 1000)
    finally:
        for key in broker.client.scan_iter(match=f"{namespace}:*"):
            broker.client.delete(key)
        broker.close()

    print(f"{args.queues} queues, {args.records} records, {args.requests} requests each (alternating)")
    print(f"page: {round_trips} Redis round trip(s), {len(statements)} SQL queries per view")
    print("| request | median ms | p95 ms |")
    print("|---|---:|---:|")
    for name, timings in (("monitoring page", page_ms), ("health view, details=1", health_ms)):
        print(f"| {name} | {statistics.median(timings):.2f} | {percentile(timings, 0.95):.2f} |")
    ratio = statistics.median(page_ms) / statistics.median(health_ms)
    print(f"page / health view (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
