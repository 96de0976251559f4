"""Actors run by the real ``dramatiq`` command in tests/test_worker_processes.py.

``WORKER_APP_NAMESPACE`` selects the Redis namespace and queue, so each test has its own.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("WORKER_APP_NAMESPACE", "otel-worker-app")

# A test of redelivery shortens Dramatiq's heartbeat timeout (ms) so a killed worker's messages come
# back within seconds; maintenance (the requeue of dead workers' messages) then runs on every fetch.
HEARTBEAT_TIMEOUT = int(os.environ.get("WORKER_APP_HEARTBEAT_TIMEOUT", "60000"))
broker = RedisBroker(
    host="127.0.0.1",
    port=6379,
    namespace=NAMESPACE,
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    maintenance_chance=1_000_000 if HEARTBEAT_TIMEOUT < 60000 else 1000,
)
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


@dramatiq.actor(queue_name=f"{NAMESPACE}-fatal", max_retries=0)
def fatal() -> None:
    """Fails for good at once; every attempt leaves a line in ``WORKER_APP_ATTEMPTS``."""
    with open(os.environ["WORKER_APP_ATTEMPTS"], "a") as attempts:
        attempts.write(f"{os.getpid()}\n")
    raise ValueError("for good")


def alert_then_crash_once(failure: object) -> None:
    """A failure hook (``OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS``): records the alert in
    ``WORKER_APP_ALERTS``; the first time, kills its own worker process before the message is
    acknowledged, as a crash or an OOM kill would, so the message is redelivered to another worker."""
    import signal

    path = os.environ["WORKER_APP_ALERTS"]
    first = not os.path.exists(path)
    with open(path, "a") as alerts:
        alerts.write(f"{os.getpid()} {getattr(failure, 'message_id', '?')}\n")
    if first:
        os.kill(os.getpid(), signal.SIGKILL)
