"""What the queue counts include on RabbitMQ: ready + unacknowledged through the management HTTP API
when it is configured, ready only otherwise, and which one a snapshot is (docs/queue-counts.md)."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name

from opentelemetry_instrumentation_dramatiq_cfg.django.conf import HealthSettings
from opentelemetry_instrumentation_dramatiq_cfg.django.service import TaskService
from opentelemetry_instrumentation_dramatiq_cfg.queue_state import (
    READY_AND_UNACKED,
    READY_ONLY,
    reader_for_broker,
)
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.rabbitmq_management import (
    MANAGEMENT_URL_ENV,
    ManagementAPI,
)

from .prometheus_server import free_port
from .test_metric_values import gauge, ready_in, wait_until

SECRET = "s3cret-not-for-logs"


def test_management_credentials_stay_out_of_the_repr_and_the_url():
    api = ManagementAPI.from_url(f"http://watcher:{SECRET}@127.0.0.1:15672/", timeout=1)
    assert api.base_url == "http://127.0.0.1:15672"
    assert SECRET not in repr(api) and "watcher" not in repr(api)
    assert api.authorization is not None and api.authorization.startswith("Basic ")
    with pytest.raises(ValueError, match="http"):
        ManagementAPI.from_url("amqp://guest:guest@127.0.0.1:5672/", timeout=1)


def test_an_unreachable_management_api_falls_back_to_ready_counts_and_says_why(rabbitmq_broker, queue_name):
    url = f"http://guest:{SECRET}@127.0.0.1:{free_port()}/"
    reader = reader_for_broker(rabbitmq_broker, timeout=1, rabbitmq_management_url=url)
    assert SECRET not in repr(reader)

    snapshot = reader.read([queue_name])

    assert snapshot.counts == READY_ONLY
    assert "RabbitMQ management API at http://127.0.0.1:" in snapshot.meta["management_api_error"]
    assert SECRET not in str(snapshot.meta)
    assert snapshot.queues[0].in_flight is None


def test_the_health_answer_and_the_page_say_the_counts_are_ready_only(
    client, admin_client, rabbitmq_broker, queue_name, health
):
    dramatiq.set_broker(rabbitmq_broker)
    rabbitmq_broker.declare_queue(queue_name)
    health(DETAILS="public", RABBITMQ_MANAGEMENT_URL=f"http://watcher:{SECRET}@127.0.0.1:{free_port()}/")

    body = client.get("/health/").json()
    page = admin_client.get("/admin/dramatiq_otel/monitoring/").content.decode()

    assert body["counts"] == READY_ONLY
    assert body["management_api_error"].startswith("RabbitMQ management API at http://127.0.0.1:")
    assert SECRET not in str(body) and SECRET not in page
    assert "Counts are of <strong>ready</strong> messages only" in page


def test_a_management_url_that_is_not_http_is_refused_without_repeating_it(settings):
    from django.core.exceptions import ImproperlyConfigured

    from opentelemetry_instrumentation_dramatiq_cfg.django.conf import health_settings

    settings.DRAMATIQ_HEALTH = {"RABBITMQ_MANAGEMENT_URL": f"amqp://guest:{SECRET}@rabbit:5672/"}
    with pytest.raises(ImproperlyConfigured, match="RABBITMQ_MANAGEMENT_URL") as raised:
        health_settings()
    assert SECRET not in str(raised.value)


@pytest.fixture
def rabbitmq_broker(namespace):
    from .conftest import cleanup_broker, make_broker

    broker = make_broker("rabbitmq", namespace)
    yield broker
    cleanup_broker(broker, namespace)


def test_the_management_api_counts_what_workers_hold(
    private_server_factory, instrument, metric_reader, queue_name, monkeypatch
):
    """A message delayed by 60 s that a running worker holds, and one that blocks the worker: the
    management API counts both (delayed 1, in flight 1); ready-only reads 0 and unknown. The queue
    gauges follow DRAMATIQ_RABBITMQ_MANAGEMENT_URL."""
    import threading

    server = private_server_factory("rabbitmq", management=True)
    management = f"http://guest:guest@127.0.0.1:{server.extra_ports['management']}/"
    monkeypatch.setenv(MANAGEMENT_URL_ENV, management)
    instrument(queue_metrics_interval=0)
    broker = RabbitmqBroker(host="127.0.0.1", port=server.port, heartbeat=0, confirm_delivery=True)
    dramatiq.set_broker(broker)
    release = threading.Event()

    @dramatiq.actor(queue_name=queue_name)
    def held(block):
        if block:
            release.wait(30)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        held.send_with_options(args=(False,), delay=60_000)
        held.send(True)
        wait_until(lambda: ready_in(broker, dq_name(queue_name)) == 0 and ready_in(broker, queue_name) == 0)

        with_api = reader_for_broker(broker, rabbitmq_management_url=management)
        wait_until(lambda: _held(with_api, queue_name))  # the API's figures lag by up to 0.5 s here
        (counted,) = with_api.read([queue_name]).queues
        monkeypatch.delenv(MANAGEMENT_URL_ENV)
        ready_only = reader_for_broker(broker).read([queue_name])
        monkeypatch.setenv(MANAGEMENT_URL_ENV, management)

        assert (counted.pending, counted.delayed, counted.in_flight, counted.consumers) == (0, 1, 1, 1)
        assert with_api.read([queue_name]).counts == READY_AND_UNACKED
        (ready,) = ready_only.queues
        assert (ready.pending, ready.delayed, ready.in_flight, ready_only.counts) == (0, 0, None, READY_ONLY)
        assert gauge(metric_reader, "dramatiq.queue.delayed", queue_name) == 1
        config = HealthSettings(BROKER=broker, DETAILS="public", RABBITMQ_MANAGEMENT_URL=management)
        _, body = TaskService(config).health(details=True)
        assert body["counts"] == READY_AND_UNACKED and "management_api_error" not in body
        (queue,) = [q for q in body["queues"] if q["name"] == queue_name]
        assert (queue["delayed"], queue["in_flight"]) == (1, 1)
        assert "guest:guest" not in repr(config)
    finally:
        release.set()
        worker.stop()
        broker.close()


def _held(reader, queue_name):
    (queue,) = reader.read([queue_name]).queues
    return queue.delayed == 1 and queue.in_flight == 1
