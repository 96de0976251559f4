"""One behaviour test per ``DRAMATIQ_HEALTH`` key that no other test exercised (issue 24):
``BROKER``, ``WORKER_TIMEOUT``, ``MIN_WORKERS`` above 1, ``INSTRUMENT`` with ``INSTRUMENT_OPTIONS``,
and the expiry of ``ALERT_WINDOW``."""

from __future__ import annotations

import time

import dramatiq
from django.apps import apps
from django.core import mail
from django.core.cache import cache
from dramatiq.brokers.stub import StubBroker

from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, semconv
from opentelemetry_instrumentation_dramatiq_cfg.django.alerts import mail_admins_on_failure
from opentelemetry_instrumentation_dramatiq_cfg.hooks import TaskOutcome
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.registry import memory_registry

from .conftest import process_all

#: The broker ``DRAMATIQ_HEALTH["BROKER"]`` names by dotted path in the test below.
NAMED_BROKER = StubBroker()
NAMED_BROKER.declare_queue("named-broker-queue")


def register_worker(broker: StubBroker, worker_id: str, *, seen_ago: float, queue: str) -> None:
    """A worker-registry entry as a worker process writes it, last seen ``seen_ago`` seconds ago."""
    record = {"host": "box", "pid": 1, "queues": [queue], "threads": 1, "last_seen": time.time() - seen_ago}
    memory_registry.setdefault(broker, {})[worker_id] = record


def test_the_broker_setting_names_the_broker_to_read(client, health):
    dramatiq.set_broker(StubBroker())  # the global broker, which the setting overrides
    health(DETAILS="public", BROKER=f"{__name__}.NAMED_BROKER", MIN_WORKERS=0)

    body = client.get("/health/").json()

    assert [q["name"] for q in body["queues"]] == ["named-broker-queue"]


def test_the_worker_timeout_decides_when_a_silent_worker_is_stale(client, health, queue_name):
    broker = StubBroker()
    broker.declare_queue(queue_name)
    dramatiq.set_broker(broker)
    register_worker(broker, "quiet-for-5s", seen_ago=5, queue=queue_name)

    health(DETAILS="public", WORKER_TIMEOUT=60)
    patient = client.get("/health/").json()
    health(DETAILS="public", WORKER_TIMEOUT=2)
    strict = client.get("/health/").json()

    assert (patient["status"], patient["active_workers"], patient["workers"][0]["status"]) == (
        "healthy",
        1,
        "active",
    )
    assert (strict["status"], strict["active_workers"], strict["workers"][0]["status"]) == (
        "degraded",
        0,
        "stale",
    )


def test_min_workers_above_one_needs_that_many_live_workers(client, health, queue_name):
    broker = StubBroker()
    broker.declare_queue(queue_name)
    dramatiq.set_broker(broker)
    health(MIN_WORKERS=2)
    register_worker(broker, "first", seen_ago=0, queue=queue_name)

    one = client.get("/health/").json()
    register_worker(broker, "second", seen_ago=0, queue=queue_name)
    two = client.get("/health/").json()

    assert (one["status"], one["active_workers"], one["min_workers"]) == ("degraded", 1, 2)
    assert (two["status"], two["active_workers"]) == ("healthy", 2)


def test_instrument_with_its_options_instruments_at_django_start(
    settings, tracer_provider, meter_provider, span_exporter, queue_name
):
    settings.DRAMATIQ_HEALTH = {
        "INSTRUMENT": True,
        "INSTRUMENT_OPTIONS": {
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
            "excluded_actors": ["unseen"],
        },
    }
    instrumentor = DramatiqInstrumentor()
    assert not instrumentor.is_instrumented_by_opentelemetry
    apps.get_app_config("dramatiq_otel").ready()
    try:
        assert instrumentor.is_instrumented_by_opentelemetry
        broker = StubBroker()
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name=queue_name)
        def seen():
            return None

        @dramatiq.actor(queue_name=queue_name)
        def unseen():
            return None

        seen.send()
        unseen.send()
        process_all(broker, queue_name)
    finally:
        instrumentor.uninstrument()

    names = sorted(span.name for span in span_exporter.get_finished_spans())
    assert names == [f"process {queue_name}", f"send {queue_name}"]
    assert {span.attributes[semconv.DRAMATIQ_ACTOR_NAME] for span in span_exporter.get_finished_spans()} == {
        "seen"
    }


def test_a_new_alert_is_mailed_once_the_alert_window_has_passed(health):
    health(ALERT_WINDOW=0.5)
    cache.clear()
    mail.outbox.clear()

    def fail(message_id: str) -> None:
        mail_admins_on_failure(
            TaskOutcome("flaky_export", message_id, "default", "failed", 0, 0.1, ValueError("x"), None)
        )

    fail("m1")
    fail("m2")  # inside the window: counted, not mailed
    time.sleep(0.6)
    fail("m3")

    assert [m.subject for m in mail.outbox] == ["[Django] Critical Task Failure: flaky_export"] * 2
    assert "m1" in mail.outbox[0].body and "m3" in mail.outbox[1].body
