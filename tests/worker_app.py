"""Actors run by the real ``dramatiq`` command in tests/test_worker_processes.py.

``WORKER_APP_NAMESPACE`` selects the Redis namespace and queue, so each test has its own.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("WORKER_APP_NAMESPACE", "otel-worker-app")

broker = RedisBroker(host="127.0.0.1", port=6379, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=NAMESPACE, max_retries=0)
def double(x: int) -> None:
    print(x * 2)


@dramatiq.actor(queue_name=f"{NAMESPACE}-slow", max_retries=0, notify_shutdown=True)
def slow() -> None:
    """Runs until the worker shuts down (ShutdownNotifications raises Shutdown into it)."""
    broker.client.set(f"{NAMESPACE}:slow-started", 1)
    import time

    for _ in range(600):
        time.sleep(0.1)


@dramatiq.actor(queue_name=NAMESPACE, max_retries=1, min_backoff=100, max_backoff=200)
def always_fails() -> None:
    """Fails twice: one retry, then for good."""
    raise ValueError("always")


@dramatiq.actor(queue_name=f"{NAMESPACE}-idle")
def idle() -> None:
    """Sent to a queue the tests' workers do not consume (``--queues``): its depth is known."""
