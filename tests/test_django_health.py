"""The Django health view, the guide's task service, the command, the checks, and mail alerts."""

from __future__ import annotations

import io
import time

import dramatiq
import pytest
from django.core import mail
from django.core.checks import run_checks
from django.core.management import call_command
from django.http import JsonResponse
from django.test import RequestFactory

from opentelemetry_instrumentation_dramatiq_cfg.django.alerts import mail_admins_on_failure
from opentelemetry_instrumentation_dramatiq_cfg.hooks import TaskOutcome

from .conftest import make_broker, process_all

TOKEN = "a-long-enough-health-token"


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_no_worker_is_degraded_even_after_this_process_sent_tasks(client, broker, queue_name, health):
    health(DETAILS="public")

    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    for _ in range(3):
        work.send()
    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert (body["redis_connection"], body["active_workers"], body["total_pending_tasks"]) == (True, 0, 3)
    assert body["total_workers"] == 0
    (queue,) = [q for q in body["queues"] if q["name"] == queue_name]
    assert queue["pending"] == 3


def test_a_running_worker_makes_it_healthy(client, broker, queue_name, health, start_worker):
    health(DETAILS="public")

    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    start_worker()
    wait_for(lambda: client.get("/health/").json()["active_workers"] == 1)
    body = client.get("/health/").json()
    assert body["status"] == "healthy"
    assert body["active_workers"] == 1 and body["total_workers"] == 1
    assert [w["status"] for w in body["workers"]] == ["active"]


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
@pytest.mark.parametrize("status", [500, 503])
def test_an_unreachable_broker_is_unhealthy(client, health, kind, status):
    url = {
        "redis": "redis://user:hunter2-secret@127.0.0.1:1/0",
        "rabbitmq": "amqp://user:hunter2-secret@127.0.0.1:1/%2F",
    }[kind]
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url) if kind == "redis" else RabbitmqBroker(url=url)
    broker.declare_queue("q") if kind == "redis" else None
    dramatiq.set_broker(broker)
    health(TIMEOUT=0.5, UNHEALTHY_STATUS=status)

    response = client.get("/health/")

    assert response.status_code == status
    body = response.json()
    assert body["status"] == "unhealthy" and body["redis_connection"] is False
    assert "127.0.0.1:1" in body["error"]
    assert "hunter2" not in response.content.decode()
    assert "Traceback" not in response.content.decode()


def test_no_broker_configured_is_unhealthy_with_a_clear_error(client, health):
    dramatiq.broker.global_broker = None
    body = client.get("/health/").json()
    assert body["status"] == "unhealthy"
    assert "No Dramatiq broker is configured" in body["error"]
    assert dramatiq.broker.global_broker is None  # reading never creates a broker


def test_disabled(client, health):
    health(ENABLED=False)
    response = client.get("/health/")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "disabled", "message": "Task system is disabled"},
    )


@pytest.mark.parametrize("broker_kind", ["stub", "redis"])
def test_details_need_staff_or_token(client, broker, health, django_user_model, db):
    health(DETAILS="staff", TOKEN=TOKEN)
    anonymous = client.get("/health/")
    assert anonymous.status_code == 200 and "queues" not in anonymous.json()
    assert "status" in anonymous.json()  # the summary stays public
    assert client.get("/health/?details=1").status_code == 403
    with_token = client.get("/health/", headers={"X-Dramatiq-Health-Token": TOKEN})
    assert "queues" in with_token.json() and "workers" in with_token.json()
    assert "queues" not in client.get("/health/", headers={"X-Dramatiq-Health-Token": "wrong"}).json()
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    assert "queues" in client.get("/health/").json()
    assert "queues" not in client.get("/health/?details=0").json()


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_token_mode_ignores_staff_users(client, broker, health, django_user_model, db):
    health(DETAILS="token", TOKEN=TOKEN)
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    assert "queues" not in client.get("/health/").json()
    assert "queues" in client.get("/health/", headers={"X-Dramatiq-Health-Token": TOKEN}).json()


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_bad_query_parameters_are_400(client, broker, health):
    response = client.get("/health/?details=maybe")
    assert (response.status_code, response.json()) == (400, {"error": "details must be 0 or 1"})
    assert client.post("/health/").status_code == 405


def test_the_guides_view_runs_with_only_its_import_changed(broker, queue_name, health, start_worker):
    from opentelemetry_instrumentation_dramatiq_cfg.django import get_task_service

    # The guide's task_health_check, verbatim but for the import line.
    def task_health_check(request):
        """Health check endpoint for task system"""
        task_service = get_task_service()

        if not task_service.is_enabled():
            return JsonResponse({"status": "disabled", "message": "Task system is disabled"})

        try:
            # Check Redis connection
            redis_ok = task_service.check_redis_connection()

            # Check worker status
            workers = task_service.get_worker_stats()
            active_workers = len([w for w in workers if w["status"] == "active"])

            # Check queue depths
            queues = task_service.get_queue_stats()
            total_pending = sum(q["pending"] for q in queues)

            return JsonResponse(
                {
                    "status": "healthy" if redis_ok and active_workers > 0 else "degraded",
                    "redis_connection": redis_ok,
                    "active_workers": active_workers,
                    "total_workers": len(workers),
                    "total_pending_tasks": total_pending,
                    "queues": queues,
                }
            )

        except Exception as e:
            return JsonResponse({"status": "unhealthy", "error": str(e)}, status=500)

    import json

    @dramatiq.actor(queue_name=queue_name)
    def work():
        pass

    work.send()
    degraded = json.loads(task_health_check(RequestFactory().get("/")).content)
    assert degraded["status"] == "degraded" and degraded["total_pending_tasks"] == 1
    assert {q["name"]: q["pending"] for q in degraded["queues"]}[queue_name] == 1

    start_worker()
    wait_for(lambda: json.loads(task_health_check(RequestFactory().get("/")).content)["active_workers"] == 1)
    healthy = json.loads(task_health_check(RequestFactory().get("/")).content)
    assert healthy["status"] == "healthy" and healthy["redis_connection"] is True


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_command_exits_by_status(broker, health, start_worker):
    def run() -> tuple[int, dict]:
        import json

        out = io.StringIO()
        try:
            call_command("dramatiq_health", stdout=out)
            code = 0
        except SystemExit as exit:
            code = exit.code
        return code, json.loads(out.getvalue())

    code, body = run()
    assert (code, body["status"]) == (1, "degraded")
    start_worker()
    wait_for(lambda: run()[0] == 0)
    code, body = run()
    assert (code, body["status"], body["active_workers"]) == (0, "healthy", 1)
    assert "queues" in body
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url="redis://127.0.0.1:1/0"))
    health(TIMEOUT=0.5)
    code, body = run()
    assert (code, body["status"]) == (2, "unhealthy")


def test_system_checks_report_bad_settings(health):
    health(TIMEOUT=-1, DETAILS="everyone", MIN_WORKERS="two", TYPO=1, UNHEALTHY_STATUS=418)
    messages = [m for m in run_checks() if m.id == "dramatiq_otel.E001"]
    text = "\n".join(m.msg for m in messages)
    assert len(messages) == 5
    for needle in ("TIMEOUT", "DETAILS", "MIN_WORKERS", "unknown keys ['TYPO']", "UNHEALTHY_STATUS"):
        assert needle in text
    health(DETAILS="token")
    assert [m.msg for m in run_checks() if m.id == "dramatiq_otel.E001"] == [
        "DRAMATIQ_HEALTH['DETAILS'] is 'token' but DRAMATIQ_HEALTH['TOKEN'] is not set"
    ]


def test_a_stall_timeout_that_is_not_a_positive_number_is_reported(health):
    health(STALL_TIMEOUT=0)
    assert [m.msg for m in run_checks() if m.id == "dramatiq_otel.E001"] == [
        "DRAMATIQ_HEALTH['STALL_TIMEOUT'] must be a positive number of seconds, got 0"
    ]


def test_system_checks_warn_when_the_middleware_is_not_first(health):
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.middleware import Retries

    from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware

    dramatiq.set_broker(StubBroker(middleware=[Retries(), OpenTelemetryMiddleware()]))
    (warning,) = [m for m in run_checks() if m.id == "dramatiq_otel.W001"]
    assert "Retries" in warning.msg
    dramatiq.set_broker(StubBroker(middleware=[OpenTelemetryMiddleware(), Retries()]))
    assert [m for m in run_checks() if m.id == "dramatiq_otel.W001"] == []


def test_alert_mail_is_sent_once_per_actor_per_window(health):
    health(ALERT_WINDOW=600)
    mail.outbox.clear()
    from django.core.cache import cache

    cache.clear()
    for i in range(5):
        mail_admins_on_failure(
            TaskOutcome("nightly_report", f"m{i}", "default", "failed", 3, 0.1, ValueError("x"), None)
        )
    mail_admins_on_failure(TaskOutcome("other_task", "m9", "default", "failed", 0, 0.1, None, None))
    assert [m.subject for m in mail.outbox] == [
        "[Django] Critical Task Failure: nightly_report",
        "[Django] Critical Task Failure: other_task",
    ]
    assert "m0" in mail.outbox[0].body and "after 3 retries" in mail.outbox[0].body


def test_a_worker_failing_for_good_alerts_once_after_the_last_attempt(
    instrument, namespace, queue_name, health
):
    """Real Redis, a real worker, an actor with max_retries=3 that always fails: one hook call, one mail."""
    from django.core.cache import cache
    from dramatiq.middleware import CurrentMessage

    cache.clear()
    mail.outbox.clear()
    attempts: list[int] = []
    failures: list[TaskOutcome] = []
    instrument(failure_hooks=[failures.append, mail_admins_on_failure])
    broker = make_broker("redis", namespace)
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue_name, max_retries=3, min_backoff=10, max_backoff=30)
    def always_fails():
        attempts.append(CurrentMessage.get_current_message().options.get("retries", 0))
        raise RuntimeError("still broken")

    from .conftest import cleanup_broker

    message = always_fails.send()
    try:
        process_all(broker, queue_name)
    finally:
        cleanup_broker(broker, namespace)

    assert attempts == [0, 1, 2, 3]
    (failure,) = failures
    assert (failure.message_id, failure.retries, failure.outcome) == (message.message_id, 3, "failed")
    assert [m.subject for m in mail.outbox] == ["[Django] Critical Task Failure: always_fails"]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_health_request_is_one_redis_round_trip_whatever_the_queues(
    client, broker, health, record_redis_writes
):
    health(DETAILS="public")
    for i in range(50):
        broker.declare_queue(f"{broker.namespace}-{i}")
    assert len(client.get("/health/").json()["queues"]) == 50  # connects and warms up
    writes = record_redis_writes()
    assert client.get("/health/").json()["status"] == "degraded"
    assert len(writes) == 1
