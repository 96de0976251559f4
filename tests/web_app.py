"""A WSGI app that sends one Dramatiq message per request, served by gunicorn in
tests/test_prometheus_processes.py (the web side of a Dramatiq deployment)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

NAMESPACE = os.environ.get("WORKER_APP_NAMESPACE", "otel-web-app")

broker = RedisBroker(host="127.0.0.1", port=6379, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=NAMESPACE)
def ordered(order: int) -> None:
    """Never processed in the test: only the send side is measured."""


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    ordered.send(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"sent"]
