"""Actors run by the real ``dramatiq`` command against the real RabbitMQ (tests/test_real_commands.py).

``WORKER_APP_NAMESPACE`` names the queue; ``WORKER_APP_DONE`` is a file each processed message
appends a line to (pid and argument), so the test knows when every message is done without reading
the broker.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

NAMESPACE = os.environ.get("WORKER_APP_NAMESPACE", "otel-worker-app")
DONE = os.environ.get("WORKER_APP_DONE", os.devnull)

broker = RabbitmqBroker(host="127.0.0.1", port=5672, heartbeat=0)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=NAMESPACE, max_retries=0)
def double(x: int) -> None:
    with open(DONE, "a") as done:
        done.write(f"{os.getpid()} {x * 2}\n")
