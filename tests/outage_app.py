"""The actor the real ``dramatiq`` command runs in tests/test_broker_outage.py.

Environment: ``OUTAGE_BROKER`` (``redis`` or ``rabbitmq``), ``OUTAGE_PORT`` (the test's private
server), ``WORKER_APP_NAMESPACE`` (Redis namespace and queue name) and ``OUTAGE_DIR``, where each
worker process appends the sequence number of every message it ran to ``processed-<pid>.txt`` (a
file, not the broker: what ran must be known while the broker is down).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dramatiq

NAMESPACE = os.environ["WORKER_APP_NAMESPACE"]
PORT = int(os.environ["OUTAGE_PORT"])
OUT = Path(os.environ["OUTAGE_DIR"])

broker: dramatiq.Broker
if os.environ["OUTAGE_BROKER"] == "redis":
    from dramatiq.brokers.redis import RedisBroker

    # OUTAGE_HEARTBEAT_TIMEOUT_MS / OUTAGE_MAINTENANCE_CHANCE (per million fetches): the second run of
    # the test takes over the messages a stopped worker still held, as Dramatiq's maintenance does.
    broker = RedisBroker(
        host="127.0.0.1",
        port=PORT,
        namespace=NAMESPACE,
        heartbeat_timeout=int(os.environ.get("OUTAGE_HEARTBEAT_TIMEOUT_MS", "60000")),
        maintenance_chance=int(os.environ.get("OUTAGE_MAINTENANCE_CHANCE", "1000")),
    )
else:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(host="127.0.0.1", port=PORT, confirm_delivery=True)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="work", queue_name=NAMESPACE, max_retries=0)
def work(seq: int) -> None:
    time.sleep(0.02)
    with (OUT / f"processed-{os.getpid()}.txt").open("a") as file:
        file.write(f"{seq}\n")
