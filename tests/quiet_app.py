"""The app the real ``dramatiq`` command runs in tests/test_broker_traffic_processes.py.

``QUIET_APP_BROKER`` (``redis`` or ``rabbitmq``) picks the broker; ``WORKER_APP_NAMESPACE`` names the
queue (and the Redis namespace), so each test has its own.
"""

from __future__ import annotations

import os

import dramatiq
import redis

NAMESPACE = os.environ.get("WORKER_APP_NAMESPACE", "otel-quiet-app")

if os.environ.get("QUIET_APP_BROKER") == "rabbitmq":
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(host="127.0.0.1", port=5672, confirm_delivery=True)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(host="127.0.0.1", port=6379, namespace=NAMESPACE)
dramatiq.set_broker(broker)
client = redis.Redis(host="127.0.0.1", port=6379)


@dramatiq.actor(queue_name=NAMESPACE, max_retries=0)
def touch(index: int) -> None:
    """The actor's own Redis call: a child of its process span, on either broker."""
    client.set(f"{NAMESPACE}:touched:{index}", 1, ex=300)
