"""The app of tests/test_stall_judgement.py's real-command test: instrumented (options from the
``OTEL_PYTHON_DRAMATIQ_*`` variables), a Redis broker in the namespace ``STALL_APP_NAMESPACE``, and
an actor that takes ``STALL_APP_TASK_SECONDS``."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

DramatiqInstrumentor().instrument()
NAMESPACE = os.environ["STALL_APP_NAMESPACE"]
broker = RedisBroker(host="127.0.0.1", port=6379, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=NAMESPACE, max_retries=0)
def task() -> None:
    time.sleep(float(os.environ["STALL_APP_TASK_SECONDS"]))
