"""The worker app of tests/test_worker_ids_across_hosts.py: a Redis broker at ``NETNS_REDIS`` (host:port)
with the worker registry beating every 0.2 s, and one actor."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from opentelemetry_instrumentation_dramatiq_cfg.queue_state import WorkerRegistryMiddleware

host, port = os.environ["NETNS_REDIS"].split(":")
broker = RedisBroker(host=host, port=int(port), namespace=os.environ["NETNS_NAMESPACE"])
broker.add_middleware(WorkerRegistryMiddleware(interval=0.2))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ["NETNS_NAMESPACE"])
def hello() -> None:
    pass
