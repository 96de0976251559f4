"""The admin's dead-letter pages: listing, the permission, CSRF, confirmation, admin log, bad input,
escaping, the capture rules for arguments, and one broker round trip per page."""

from __future__ import annotations

import re
import time
from html import unescape
from typing import Any

import dramatiq
import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from dramatiq.broker import MessageProxy

from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.dead_letters import dead_letters_for_broker

from .test_dead_letters import Doomed
from .test_monitoring_page import table

pytestmark = pytest.mark.django_db
MONITORING = "/admin/dramatiq_otel/monitoring/"
TRACE_URL = "http://localhost:16686/trace/{trace_id}"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def url(queue_name: str) -> str:
    return f"/admin/dramatiq_otel/deadletter/{queue_name}/"


@pytest.fixture
def operator(client, django_user_model):
    """A staff user with the permission to requeue and delete (not a superuser)."""
    user = django_user_model.objects.create_user("operator", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="manage_dead_letters"))
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def viewer(client, django_user_model):
    """A staff user without the permission."""
    client.force_login(django_user_model.objects.create_user("viewer", is_staff=True))
    return client


def bury(broker: Any, queue_name: str, count: int, **fields: Any) -> list[dramatiq.Message]:
    """``count`` dead letters put straight into a StubBroker's dead-letter list, oldest first."""
    broker.declare_queue(queue_name)
    buried = []
    for number in range(count):
        message = dramatiq.Message(
            queue_name=queue_name,
            actor_name=fields.get("actor_name", "settle_invoice"),
            args=fields.get("args", (number,)),
            kwargs=fields.get("kwargs", {}),
            options={"retries": 3, "traceparent": TRACEPARENT, **fields.get("options", {})},
        )
        broker.dead_letters_by_queue[queue_name].append(MessageProxy(message))
        buried.append(message)
    return buried


def dead_count(broker: Any, queue_name: str) -> int:
    return dead_letters_for_broker(broker).page(queue_name, 0, 1).total


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_the_monitoring_page_links_each_queue_to_its_dead_letters(operator, broker, queue_name, health):
    bury(broker, queue_name, 2)
    html = operator.get(MONITORING).content.decode()
    assert f'<a href="{url(queue_name)}" class="dead-letters-link">2</a>' in html


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_dead_letters_newest_first_with_error_retries_and_trace_link(
    operator, broker, queue_name, health, start_worker
):
    health(TRACE_URL=TRACE_URL)
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    start_worker(threads=1)
    sent = doomed.kill(dead, 3)
    TaskRecord.objects.create(
        actor_name="settle_invoice",
        queue_name=queue_name,
        duration=0.1,
        outcome="failed",
        retries=0,
        message_id=sent[1].message_id,
        trace_id="",
        timestamp=timezone.now(),
        exception_type="ValueError",
        exception_message="invoice 1 is locked",
    )
    response = operator.get(url(queue_name))
    assert response.status_code == 200
    html = response.content.decode()
    rows = table(html, "dead-letters")
    assert [row[1] for row in rows] == doomed.newest_first(sent)
    (row,) = [row for row in rows if row[1] == sent[1].message_id]
    _, _, actor, died, retries, error, arguments, _trace, buttons = row
    assert (actor, retries, error, arguments) == (
        "settle_invoice",
        "0",
        "ValueError: invoice 1 is locked",
        "",
    )
    assert died.endswith(("s ago", "just now")) and buttons == "Requeue Delete"
    trace_ids = {letter.trace_id for letter in dead.page(queue_name).letters}
    assert len(trace_ids) == 3 and None not in trace_ids
    for trace_id in trace_ids:
        assert f'href="{TRACE_URL.format(trace_id=trace_id)}"' in html
    assert 'id="args-hidden"' in html and "Messages 1&ndash;3 of 3" in html


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_one_broker_round_trip_per_page(
    operator, broker, queue_name, health, start_worker, record_redis_writes
):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=2)
    doomed.kill(dead, 60)
    worker.stop()  # its own traffic would count too
    operator.get(url(queue_name))  # the reader connects, the script is loaded
    writes = record_redis_writes()
    html = operator.get(url(queue_name) + "?p=2").content.decode()
    assert len(writes) == 1
    assert len(table(html, "dead-letters")) == 10 and "Page 2 of 2" in html


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_pages_of_fifty_newest_first(operator, broker, queue_name, health):
    bury(broker, queue_name, 120)
    pages = [operator.get(url(queue_name) + f"?p={n}").content.decode() for n in (1, 2, 3, 4, "x")]
    numbers = [[row[6] for row in table(html, "dead-letters")] for html in pages[:3]]
    assert [len(n) for n in numbers] == [50, 50, 20]
    assert 'id="older"' in pages[0] and 'id="newer"' not in pages[0] and 'id="older"' not in pages[2]
    assert table(pages[3], "dead-letters") == [["No dead-lettered message on this page."]]
    assert "Page 1 of 3" in pages[4]  # a page number that is not one: the first page


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_arguments_follow_the_capture_rules_redaction_and_size_cap(operator, broker, queue_name, health):
    def hide_cards(actor_name, args, kwargs):
        return args, {key: ("***" if key == "card" else value) for key, value in kwargs.items()}

    bury(broker, queue_name, 1, args=(7,), kwargs={"card": "4111-1111", "note": "y" * 500})
    assert "4111" not in operator.get(url(queue_name)).content.decode()  # off by default

    health(INSTRUMENT_OPTIONS={"capture_args": True, "capture_args_max_length": 80}, REDACT_ARGS=hide_cards)
    html = operator.get(url(queue_name)).content.decode()
    (row,) = table(html, "dead-letters")
    arguments = unescape(row[6])
    assert "4111" not in arguments and "&#x27;card&#x27;: &#x27;***&#x27;" in html
    assert len(arguments) <= 80 and arguments.endswith("...")

    health(INSTRUMENT_OPTIONS={"capture_args": True}, REDACT_ARGS=lambda *a: 1 / 0)
    (row,) = table(operator.get(url(queue_name)).content.decode(), "dead-letters")
    assert unescape(row[6]) == "<arguments hidden: REDACT_ARGS failed>"

    broker.dead_letters_by_queue[queue_name].clear()
    bury(broker, queue_name, 1, args=("redis://u:pw@h/0",))
    health(INSTRUMENT_OPTIONS={"capture_args": True})
    html = operator.get(url(queue_name)).content.decode()
    assert "pw@" not in html and "redis://***@h/0" in html


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_hostile_arguments_ids_and_errors_are_escaped(operator, broker, queue_name, health):
    evil = '<script>alert("x")</script>'
    health(INSTRUMENT_OPTIONS={"capture_args": True})
    bury(
        broker,
        queue_name,
        1,
        actor_name=evil,
        args=(evil,),
        options={"traceback": f"Traceback...\nValueError: {evil}", "traceparent": f'00-{evil}-"'},
    )
    html = operator.get(url(queue_name)).content.decode()
    assert "<script>alert" not in html
    assert html.count("&lt;script&gt;alert(") >= 3  # actor, error, arguments


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_a_staff_user_without_the_permission_sees_no_action_and_cannot_post(
    viewer, broker, queue_name, health
):
    buried = bury(broker, queue_name, 2)
    html = viewer.get(url(queue_name)).content.decode()
    assert len(table(html, "dead-letters")) == 2
    assert 'name="_selected"' not in html and 'id="requeue-all"' not in html and 'id="no-permission"' in html
    for data in (
        {"action": "delete", "scope": "all", "post": "yes"},
        {"action": f"requeue:{buried[0].message_id}"},
    ):
        assert viewer.post(url(queue_name), data).status_code == 403
    assert dead_count(broker, queue_name) == 2 and not LogEntry.objects.exists()


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_anonymous_and_non_staff_users_get_the_login_page(
    client, django_user_model, broker, queue_name, health
):
    bury(broker, queue_name, 1)
    for response in (
        client.get(url(queue_name)),
        client.post(url(queue_name), {"action": "delete", "scope": "all", "post": "yes"}),
    ):
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("visitor"))
    assert (
        client.post(url(queue_name), {"action": "delete", "scope": "all", "post": "yes"}).status_code == 302
    )
    assert dead_count(broker, queue_name) == 1


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_posts_without_the_csrf_token_are_refused(django_user_model, broker, queue_name, health):
    bury(broker, queue_name, 1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("ops", "ops@example.com", "x"))
    response = client.post(url(queue_name), {"action": "delete", "scope": "all", "post": "yes"})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert dead_count(broker, queue_name) == 1

    page = client.get(url(queue_name)).content.decode()  # with the page's token it goes through
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    data = {"action": "delete", "scope": "all", "post": "yes", "csrfmiddlewaretoken": token}
    assert client.post(url(queue_name), data).status_code == 302
    assert dead_count(broker, queue_name) == 0


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_a_get_never_changes_anything(operator, broker, queue_name, health):
    buried = bury(broker, queue_name, 2)
    query = f"?action=delete&scope=all&post=yes&_selected={buried[0].message_id}"
    assert operator.get(url(queue_name) + query).status_code == 200
    assert dead_count(broker, queue_name) == 2 and not LogEntry.objects.exists()


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_requeue_asks_for_confirmation_then_requeues_and_logs_who_what_how_many(
    operator, broker, queue_name, health, start_worker
):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=1)
    doomed.kill(dead, 3)
    letters = dead.page(queue_name).letters
    chosen = [letters[0].key, letters[2].key]
    doomed.fix()

    confirm = operator.post(url(queue_name), {"action": "requeue", "_selected": chosen})
    html = confirm.content.decode()
    assert confirm.status_code == 200 and "Requeue 2 dead-lettered messages" in html
    assert all(f'<input type="hidden" name="_selected" value="{key}">' in html for key in chosen)
    assert dead.page(queue_name).total == 3 and not LogEntry.objects.exists()  # nothing yet

    done = operator.post(
        url(queue_name), {"action": "requeue", "_selected": chosen, "post": "yes"}, follow=True
    )
    assert messages_of(done) == ["2 dead-lettered message(s) requeued."]
    assert [letter.key for letter in dead.page(queue_name).letters] == [letters[1].key]
    worker_done = time.monotonic() + 30
    while sorted(doomed.processed) != sorted(letter.message.args[0] for letter in (letters[0], letters[2])):
        assert time.monotonic() < worker_done
        time.sleep(0.05)
    worker.join()
    (entry,) = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_id) == (operator.user, CHANGE, queue_name)
    assert entry.change_message.startswith("Requeued 2 dead-lettered message(s) (selected): ")
    assert set(entry.change_message.split(": ", 1)[1].split(", ")) == set(chosen)


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_messages_held_by_another_connection_are_reported_on_the_page(
    operator, broker, queue_name, health, start_worker
):
    import pika

    from .conftest import RABBITMQ

    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=1)
    doomed.kill(dead, 3)
    worker.stop()
    holder = pika.BlockingConnection(pika.ConnectionParameters(*RABBITMQ))
    try:
        channel = holder.channel()
        channel.basic_qos(prefetch_count=1)
        method, _, _ = next(channel.consume(f"{queue_name}.XQ", inactivity_timeout=30))
        assert method is not None  # one held by a reader that is not one of our pages
        done = operator.post(
            url(queue_name), {"action": "delete", "scope": "all", "post": "yes"}, follow=True
        )
    finally:
        holder.close()
    assert messages_of(done) == [
        "2 dead-lettered message(s) deleted.",
        "Some dead-lettered messages were held by another connection (another admin or program "
        "reading them) and were left as they were: reload the page and try again.",
    ]
    assert dead_count(broker, queue_name) == 1


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_delete_one_and_delete_all(operator, broker, queue_name, health):
    buried = bury(broker, queue_name, 3)
    one = buried[1].message_id
    confirm = " ".join(operator.post(url(queue_name), {"action": f"delete:{one}"}).content.decode().split())
    assert "Delete 1 dead-lettered message " in confirm and "gone for good" in confirm
    operator.post(url(queue_name), {"action": "delete", "_selected": [one], "post": "yes"})
    assert [m.message_id for m in broker.dead_letters_by_queue[queue_name]] == [
        buried[0].message_id,
        buried[2].message_id,
    ]

    confirm = " ".join(
        operator.post(url(queue_name), {"action": "delete", "scope": "all"}).content.decode().split()
    )
    assert "Delete all 2 dead-lettered messages" in confirm
    done = operator.post(url(queue_name), {"action": "delete", "scope": "all", "post": "yes"}, follow=True)
    assert messages_of(done) == ["2 dead-lettered message(s) deleted."]
    assert dead_count(broker, queue_name) == 0 and broker.queues[queue_name].qsize() == 0
    index = operator.get("/admin/").content.decode()  # "Recent actions" lists them
    assert index.count(f"dead letters of {queue_name}") == 2
    flags = list(LogEntry.objects.order_by("action_time").values_list("action_flag", "change_message"))
    assert flags == [
        (DELETION, f"Deleted 1 dead-lettered message(s) (selected): {one}"),
        (
            DELETION,
            f"Deleted 2 dead-lettered message(s) (all): {buried[0].message_id}, {buried[2].message_id}",
        ),
    ]


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_bad_input_is_reported_and_changes_nothing(operator, broker, queue_name, health):
    buried = bury(broker, queue_name, 2)
    gone = buried[0].message_id
    operator.post(url(queue_name), {"action": "delete", "_selected": [gone], "post": "yes"}, follow=True)
    LogEntry.objects.all().delete()

    cases = [
        (
            url(f"{queue_name}-nope"),
            {},
            f"No queue named '{queue_name}-nope' is declared on this broker: nothing was changed.",
        ),
        (
            url(f"{queue_name}-nope"),
            {"action": "delete", "scope": "all", "post": "yes"},
            "nothing was changed.",
        ),
        (
            url(queue_name),
            {"action": "drop-table", "scope": "all", "post": "yes"},
            "Unknown action: nothing was changed.",
        ),
        (
            url(queue_name),
            {"action": "delete", "scope": "everything", "post": "yes"},
            "Unknown action: nothing was changed.",
        ),
        (
            url(queue_name),
            {"action": "requeue", "post": "yes"},
            "Select at least one message: nothing was changed.",
        ),
        (
            url(queue_name),
            {"action": "requeue", "_selected": [gone, "forged-id"], "post": "yes"},
            "2 message(s) were not there any more (requeued, deleted or expired meanwhile), "
            f"nothing done to them: {gone}, forged-id",
        ),
    ]
    for path, data, expected in cases:
        response = operator.post(path, data, follow=True) if data else operator.get(path, follow=True)
        assert response.status_code == 200
        found = messages_of(response)
        assert len(found) == 1, (data, found)
        message = found[0]
        assert message.endswith(expected), (data, message)
    assert [m.message_id for m in broker.dead_letters_by_queue[queue_name]] == [buried[1].message_id]
    assert broker.queues[queue_name].qsize() == 0 and not LogEntry.objects.exists()


def hide_everything(actor_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
    return ("hidden",), {}


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_redact_args_by_dotted_path_and_the_system_check(operator, broker, queue_name, health):
    from django.core.checks import run_checks

    bury(broker, queue_name, 1, args=("secret",))
    health(INSTRUMENT_OPTIONS={"capture_args": True}, REDACT_ARGS=f"{__name__}.hide_everything")
    (row,) = table(operator.get(url(queue_name)).content.decode(), "dead-letters")
    assert unescape(row[6]) == "('hidden',)"
    health(REDACT_ARGS="no_dots")
    (error,) = [m for m in run_checks() if m.id == "dramatiq_otel.E001"]
    assert "REDACT_ARGS" in error.msg


def test_an_unreachable_broker_is_reported_on_the_monitoring_page(operator, health):
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url="redis://user:hunter2-secret@127.0.0.1:1/0")
    broker.declare_queue("billing")
    dramatiq.set_broker(broker)
    health(TIMEOUT=0.5)
    response = operator.get(url("billing"), follow=True)
    (message,) = messages_of(response)
    assert message.startswith("The broker could not be read: Redis at 127.0.0.1:1")
    assert "hunter2" not in response.content.decode()
    assert response.redirect_chain == [(MONITORING, 302)]


@pytest.mark.parametrize("broker_kind", ["stub"])
def test_a_malformed_capture_variable_hides_the_arguments_and_keeps_the_page(
    operator, broker, queue_name, health, monkeypatch
):
    bury(broker, queue_name, 1, args=("visible?",))
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS", "maybe")
    response = operator.get(url(queue_name))
    assert response.status_code == 200 and "visible?" not in response.content.decode()
