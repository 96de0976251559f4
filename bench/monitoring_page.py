"""Cost of the admin monitoring page on the real Redis and PostgreSQL, against the health view.

Run::

    .venv/bin/python bench/monitoring_page.py        # 100 queues, 1,000 task records, 200 requests
    .venv/bin/python bench/monitoring_page.py --dead-letters 10000 --rabbitmq   # + dead-letter pages

The script creates its own PostgreSQL database (from ``tests.django_settings``, dropped at the end)
and Redis namespace, declares the queues (5 pending messages each), registers two workers, writes the
records (a third of them permanent failures, spread over the last day) and logs a staff user in.
It then alternates requests to the page and to the health view with details (the same single broker
read, as JSON): median and p95 of each, their ratio, Redis round trips and SQL queries per page view.
With ``--dead-letters N`` (default 10,000) queue ``q0`` also holds N dead letters (written straight
into Redis as Dramatiq's ``nack`` leaves them, each with a task record of its failure), and the
dead-letter page is measured too, its first and its last page: Redis round trips, SQL queries,
median and p95. ``--rabbitmq`` measures the same page on RabbitMQ, where reading a page means
reading the whole dead-letter queue (see docs/dead-letters.md). Nothing is asserted; the figures go
in docs/benchmarks.md (the monitoring page) and docs/dead-letters.md (the dead-letter pages).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.redis_round_trips import count_round_trips

PAGE = "/admin/dramatiq_otel/monitoring/"
DEAD = "/admin/dramatiq_otel/deadletter/"


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
    parser.add_argument("--dead-letters", type=int, default=10_000)
    parser.add_argument("--rabbitmq", action="store_true", help="also the dead-letter page on RabbitMQ")
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
    from django.test import Client
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
        urls = {"monitoring page": PAGE, "health view, details=1": "/health/?details=1"}
        if args.dead_letters:
            bury(broker, "q0", args.dead_letters)
            last = -(-args.dead_letters // 50)
            urls["dead letters, first page"] = f"{DEAD}q0/"
            urls[f"dead letters, page {last}"] = f"{DEAD}q0/?p={last}"
        costs = {name: cost(client, url, round_trips_so_far) for name, url in urls.items()}
        timings: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(args.requests):
            for name, url in urls.items():
                start = time.perf_counter()
                client.get(url)
                timings[name].append((time.perf_counter() - start) * 1000)
        if args.rabbitmq and args.dead_letters:
            costs_r, timings_r = rabbitmq_pages(client, args)
            costs.update(costs_r)
            timings.update(timings_r)
    finally:
        for key in broker.client.scan_iter(match=f"{namespace}:*"):
            broker.client.delete(key)
        broker.close()

    print(
        f"{args.queues} queues, {args.records} records, {args.dead_letters} dead letters in q0, "
        f"{args.requests} requests each (alternating)"
    )
    print("| request | broker round trips | SQL queries | median ms | p95 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, values in timings.items():
        trips, queries_count = costs[name]
        print(
            f"| {name} | {trips} | {queries_count} | {statistics.median(values):.2f} "
            f"| {percentile(values, 0.95):.2f} |"
        )
    reference = statistics.median(timings["health view, details=1"])
    for name, values in timings.items():
        print(f"{name} / health view (median): {statistics.median(values) / reference:.2f}x")


def cost(client: Any, url: str, round_trips_so_far: Any) -> tuple[Any, int]:
    """(Redis round trips, SQL queries but savepoints) of one view of ``url``, after a warm-up."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: connections, scripts, templates
    assert response.status_code == 200, (url, response.status_code)
    before = round_trips_so_far()
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return round_trips_so_far() - before, sum(1 for q in queries if "SAVEPOINT" not in q["sql"])


def dead_letter(queue_name: str, number: int) -> Any:
    import dramatiq

    return dramatiq.Message(
        queue_name,
        "settle_invoice",
        (number, {"customer": f"c-{number % 977}", "lines": list(range(number % 7))}),
        {},
        {
            "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            "retries": 3,
            "traceback": "Traceback (most recent call last):\n...\nValueError: invoice total does not match",
        },
    )


def bury(broker: Any, queue_name: str, count: int) -> None:
    """``count`` dead letters as ``nack`` leaves them (sorted set + payload hash), a record each."""
    from django.utils import timezone

    from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord

    now_ms = int(time.time() * 1000)
    key = f"{broker.namespace}:{queue_name}.XQ"
    records = []
    for start in range(0, count, 1000):
        pipe = broker.client.pipeline(transaction=False)
        for number in range(start, min(count, start + 1000)):
            redis_id = str(uuid.uuid4())
            message = dead_letter(queue_name, number).copy(options={"redis_message_id": redis_id})
            pipe.zadd(key, {redis_id: now_ms - (count - number) * 1000})
            pipe.hset(f"{key}.msgs", redis_id, message.encode())
            records.append(
                TaskRecord(
                    actor_name="settle_invoice",
                    queue_name=queue_name,
                    duration=0.2,
                    outcome="failed",
                    retries=3,
                    message_id=message.message_id,
                    trace_id="",
                    timestamp=timezone.now(),
                    exception_type="ValueError",
                    exception_message="invoice total does not match",
                )
            )
        pipe.execute()
    TaskRecord.objects.bulk_create(records, batch_size=2000)


def rabbitmq_pages(client: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The dead-letter page on RabbitMQ, ``args.dead_letters`` messages in a private ``.XQ`` queue."""
    import dramatiq
    import pika
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.common import dq_name, xq_name

    broker = RabbitmqBroker(host="127.0.0.1", heartbeat=0)
    queue_name = f"otel-bench-{uuid.uuid4().hex[:8]}"
    broker.declare_queue(queue_name, ensure=True)
    dramatiq.set_broker(broker)
    try:
        for number in range(args.dead_letters):
            broker.channel.basic_publish(
                "",
                xq_name(queue_name),
                dead_letter(queue_name, number).encode(),
                pika.BasicProperties(delivery_mode=2),
            )
        last = -(-args.dead_letters // 50)
        urls = {
            "RabbitMQ dead letters, first page": f"{DEAD}{queue_name}/",
            f"RabbitMQ dead letters, page {last}": f"{DEAD}{queue_name}/?p={last}",
        }
        costs = {name: ("-", cost(client, url, lambda: 0)[1]) for name, url in urls.items()}
        timings: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(max(3, args.requests // 20)):
            for name, url in urls.items():
                start = time.perf_counter()
                client.get(url)
                timings[name].append((time.perf_counter() - start) * 1000)
        return costs, timings
    finally:
        for name in (queue_name, dq_name(queue_name), xq_name(queue_name)):
            broker.channel.queue_delete(name)
        broker.close()


if __name__ == "__main__":
    main()
