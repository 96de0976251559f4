"""The health answer as a WSGI app mounted in Flask and as an ASGI app mounted in FastAPI, each tried
with the framework's own test client on real Redis (and RabbitMQ): the Django view's JSON, its status
codes, and who sees the queue details (docs/health-probe.md)."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from opentelemetry_instrumentation_dramatiq_cfg.health.asgi import make_asgi_app
from opentelemetry_instrumentation_dramatiq_cfg.health.config import HealthConfig
from opentelemetry_instrumentation_dramatiq_cfg.health.probe import Probe
from opentelemetry_instrumentation_dramatiq_cfg.health.wsgi import make_wsgi_app
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import (
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKER_TIMEOUT,
)
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import redis_key

from .conftest import REDIS, require_service

TOKEN = "a-long-enough-health-token"
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.fixture
def redis_namespace(namespace: str):
    require_service("Redis", REDIS)
    yield namespace
    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


def register(namespace: str, queue: str) -> None:
    record = {"host": "box", "pid": 7, "queues": [queue], "threads": 1, "last_seen": time.time()}
    redis.Redis(*REDIS).hset(redis_key(namespace), "w1", json.dumps(record))


def flask_client(health_app):
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask(__name__)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/health": health_app})  # type: ignore[method-assign]
    return app.test_client()


def fastapi_client(health_app):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.mount("/health", health_app)
    return TestClient(app)


def both(namespace: str, **config):
    """(Flask's client, FastAPI's client) over the same broker and settings."""
    settings = HealthConfig(**config)
    return [
        ("flask", flask_client(make_wsgi_app(REDIS_URL, namespace=namespace, config=settings))),
        ("fastapi", fastapi_client(make_asgi_app(REDIS_URL, namespace=namespace, config=settings))),
    ]


def get(client, path: str, **headers: str):
    response = client.get(path, headers=headers)
    return response.status_code, response.get_json() if hasattr(response, "get_json") else response.json()


@pytest.mark.redis
def test_the_summary_is_public_and_the_details_need_the_token(redis_namespace, queue_name):
    register(redis_namespace, queue_name)
    for name, client in both(redis_namespace, TOKEN=TOKEN):
        status, body = get(client, "/health/")
        assert (status, body["status"], body["active_workers"]) == (200, "healthy", 1), name
        assert "queues" not in body and "workers" not in body  # no queue name leaves by default
        assert get(client, "/health/?details=1") == (403, {"error": "queue details need the health token"})
        assert "queues" not in get(client, "/health/", **{"X-Dramatiq-Health-Token": "wrong-token-xxxxxx"})[1]
        status, body = get(client, "/health/", **{"X-Dramatiq-Health-Token": TOKEN})
        assert [q["name"] for q in body["queues"]] == [queue_name], name
        assert body["workers"][0]["worker_id"] == "w1"
        status, body = get(client, "/health/?details=0", **{"X-Dramatiq-Health-Token": TOKEN})
        assert "queues" not in body


@pytest.mark.redis
def test_public_details_bad_parameters_and_methods(redis_namespace, queue_name):
    register(redis_namespace, queue_name)
    for name, client in both(redis_namespace, DETAILS="public"):
        _, body = get(client, "/health/")
        assert [q["name"] for q in body["queues"]] == [queue_name], name
        assert get(client, "/health/?details=maybe") == (400, {"error": "details must be 0 or 1"})
        response = client.post("/health/")
        assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD"), name
        response = client.get("/health/")
        assert response.headers["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
        assert response.headers["Content-Type"] == "application/json"


@pytest.mark.redis
def test_no_worker_is_degraded_and_an_unreachable_broker_is_the_unhealthy_status(redis_namespace):
    for name, client in both(redis_namespace):
        status, body = get(client, "/health/")
        assert (status, body["status"], body["active_workers"]) == (200, "degraded", 0), name
    settings = HealthConfig(TIMEOUT=1, UNHEALTHY_STATUS=503)
    for client in (
        flask_client(make_wsgi_app("redis://:hunter2-secret@127.0.0.1:1/0", queues=["q"], config=settings)),
        fastapi_client(make_asgi_app("redis://:hunter2-secret@127.0.0.1:1/0", queues=["q"], config=settings)),
    ):
        status, body = get(client, "/health/")
        assert (status, body["status"], body["broker_connection"]) == (503, "unhealthy", False)
        assert "127.0.0.1:1" in body["error"] and "hunter2" not in json.dumps(body)


@pytest.mark.redis
def test_the_bytes_are_the_django_views(redis_namespace, queue_name, client, health):
    """One broker state, the Django view and the two apps: the same bytes."""
    broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
    broker.declare_queue(queue_name)
    register(redis_namespace, queue_name)
    dramatiq.set_broker(broker)
    health(DETAILS="public")
    django_bytes = client.get("/health/").content

    config = HealthConfig(DETAILS="public")
    flask_bytes = flask_client(make_wsgi_app(broker, config=config)).get("/health/").data
    fastapi_bytes = fastapi_client(make_asgi_app(broker, config=config)).get("/health/").content

    assert flask_bytes == fastapi_bytes == django_bytes
    assert json.loads(django_bytes)["queues"][0]["name"] == queue_name


@pytest.mark.rabbitmq
@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_rabbitmq_with_named_queues(broker, queue_name):
    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    work.send()
    config = HealthConfig(DETAILS="public")
    url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    for client in (
        flask_client(make_wsgi_app(url, queues=[queue_name], config=config)),
        fastapi_client(make_asgi_app(url, queues=[queue_name], config=config)),
    ):
        status, body = get(client, "/health/")
        assert (status, body["broker"], body["status"]) == (200, "rabbitmq", "degraded")
        assert [(q["name"], q["pending"]) for q in body["queues"]] == [(queue_name, 1)]


def test_an_app_refuses_a_rabbitmq_broker_whose_queues_it_cannot_know():
    from opentelemetry_instrumentation_dramatiq_cfg.health.config import ConfigError

    with pytest.raises(ConfigError, match="name them"):
        make_wsgi_app("amqp://127.0.0.1:5672/", config=HealthConfig())


def test_the_shared_defaults_are_the_readers():
    assert (HealthConfig.TIMEOUT, HealthConfig.WORKER_TIMEOUT, HealthConfig.STALL_TIMEOUT) == (
        DEFAULT_TIMEOUT,
        DEFAULT_WORKER_TIMEOUT,
        DEFAULT_STALL_TIMEOUT,
    )


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DRAMATIQ_HEALTH_MIN_WORKERS", "3")
    monkeypatch.setenv("DRAMATIQ_HEALTH_DETAILS", "public")
    monkeypatch.setenv("DRAMATIQ_HEALTH_UNHEALTHY_STATUS", "503")
    probe = Probe("redis://127.0.0.1:1/0", queues=["q"])
    assert (probe.config.MIN_WORKERS, probe.config.DETAILS, probe.config.UNHEALTHY_STATUS) == (
        3,
        "public",
        503,
    )


def test_gunicorn_serves_the_wsgi_factory_configured_by_the_environment(private_redis, queue_name):
    """The docs' stand-alone command: gunicorn calls ``make_wsgi_app()``, which takes the broker URL
    and the settings from ``DRAMATIQ_HEALTH_*`` (a Redis of this test's own: its namespace is the
    default one)."""
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from .prometheus_server import free_port

    url = f"redis://127.0.0.1:{private_redis.port}/0"
    record = {"host": "box", "pid": 7, "queues": [queue_name], "threads": 1, "last_seen": time.time()}
    redis.Redis(port=private_redis.port).hset(redis_key("dramatiq"), "w1", json.dumps(record))
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRAMATIQ_")}
    environ.update(DRAMATIQ_HEALTH_BROKER_URL=url, DRAMATIQ_HEALTH_DETAILS="public")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    factory = "opentelemetry_instrumentation_dramatiq_cfg.health.wsgi:make_wsgi_app()"
    server = subprocess.Popen(
        [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "1", factory],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status, body = response.status, json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(30)
    assert (status, body["status"], [q["name"] for q in body["queues"]]) == (200, "healthy", [queue_name])


@pytest.mark.rabbitmq
def test_an_app_made_before_the_actors_are_imported_reads_the_queues_they_declare(queue_name):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    require_service("RabbitMQ", ("127.0.0.1", 5672))
    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672/%2F", middleware=[])
    client = flask_client(make_wsgi_app(broker, config=HealthConfig(DETAILS="public", MIN_WORKERS=0)))
    try:
        status, body = get(client, "/health/")
        assert (status, body["status"]) == (500, "unhealthy")
        assert "RabbitMQ cannot list its queues over AMQP" in body["error"]

        broker.declare_queue(queue_name)  # what importing an actor does
        status, body = get(client, "/health/")
        assert (status, body["status"], [q["name"] for q in body["queues"]]) == (200, "healthy", [queue_name])
    finally:
        broker.close()
