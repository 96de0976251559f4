"""Cost of the Django health view on the real Redis: round trips and latency, by number of queues.

Run::

    .venv/bin/python bench/health_view.py            # 1, 10 and 100 queues, 200 requests each

For each size, the script declares that many queues on a RedisBroker (its own namespace, 5 pending
messages in each), then calls the view through Django's test client. It counts the writes of
redis-py connections (one per round trip: a pipeline is written once) during one request, and times
the requests. Nothing is asserted; the figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.redis_round_trips import count_round_trips


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()

    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["opentelemetry_instrumentation_dramatiq_cfg.django"],
        ROOT_URLCONF="tests.django_urls",
        DRAMATIQ_HEALTH={"DETAILS": "public"},
    )
    django.setup()

    import dramatiq
    from django.test import Client
    from dramatiq.brokers.redis import RedisBroker

    round_trips_so_far = count_round_trips()
    client = Client()
    print("| queues | Redis round trips per request | median ms | p95 ms |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        namespace = f"otel-bench-{uuid.uuid4().hex[:8]}"
        broker = RedisBroker(namespace=namespace)
        dramatiq.set_broker(broker)
        for i in range(size):
            queue = f"q{i}"
            broker.declare_queue(queue)
            for _ in range(5):
                broker.enqueue(dramatiq.Message(queue, "bench", (), {}, {}))
        body = client.get("/health/").json()  # warm: the reader connects once
        assert len(body["queues"]) == size and body["total_pending_tasks"] == 5 * size, body
        before = round_trips_so_far()
        client.get("/health/")
        round_trips = round_trips_so_far() - before
        timings = []
        for _ in range(args.requests):
            start = time.perf_counter()
            client.get("/health/")
            timings.append((time.perf_counter() - start) * 1000)
        timings.sort()
        p95 = timings[int(len(timings) * 0.95) - 1]
        print(f"| {size} | {round_trips} | {statistics.median(timings):.2f} | {p95:.2f} |")
        for key in broker.client.scan_iter(match=f"{namespace}*"):
            broker.client.delete(key)


if __name__ == "__main__":
    main()
