"""Requeue from the dead-letter page in a real browser (Debian's Chromium through Selenium), against
Django's live server, the real Redis broker and a real Dramatiq worker: the message runs again and
its new process span is in the original trace.

Set ``DRAMATIQ_OTEL_SCREENSHOT_DEAD_LETTERS=docs/dead-letters.png`` to save the docs' screenshot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dramatiq
import pytest
from django.contrib.auth.models import Permission
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.django.records import writer
from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord

from .conftest import cleanup_broker, make_broker, spans_named
from .test_monitoring_browser import browser, read_table, wait_for  # noqa: F401 (browser: fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

TRACE_URL = "http://localhost:16686/trace/{trace_id}"


def test_requeue_from_the_browser_runs_the_message_again_in_its_original_trace(
    browser,  # noqa: F811
    live_server,
    settings,
    django_user_model,
    instrument,
    namespace,
    span_exporter,
):
    from selenium.webdriver.common.by import By

    settings.DRAMATIQ_HEALTH = {"TRACE_URL": TRACE_URL, "INSTRUMENT_OPTIONS": {"capture_args": True}}
    settings.TIME_ZONE = "UTC"
    instrument(completion_hooks=[writer.record_task])
    broker = make_broker("redis", namespace)
    dramatiq.set_broker(broker)
    gateway_up = threading.Event()
    charged: list[int] = []
    failures: list[int] = []  # the order they die in (Dramatiq 1.x does not run them in send order)

    @dramatiq.actor(queue_name="payments", max_retries=0)
    def charge_card(order_id, amount):
        if not gateway_up.is_set():
            failures.append(order_id)
            raise ConnectionError(f"payment gateway timed out charging order {order_id}")
        charged.append(order_id)

    @dramatiq.actor(queue_name="emails")
    def send_receipt(order_id):
        pass

    sent = [charge_card.send(order_id, f"{order_id * 10}.00 EUR") for order_id in (1041, 1042, 1043)]
    send_receipt.send(1040)
    operator = django_user_model.objects.create_user(
        "ops", "ops@example.com", "a-good-password", is_staff=True
    )
    operator.user_permissions.add(Permission.objects.get(codename="manage_dead_letters"))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50, queues={"payments", "emails"})
    worker.start()
    try:

        def failed(count: int) -> bool:
            writer.flush()
            return TaskRecord.objects.filter(outcome="failed").count() == count

        wait_for(lambda: failed(3))

        browser.get(f"{live_server.url}/admin/login/?next=/admin/dramatiq_otel/monitoring/")
        browser.find_element(By.ID, "id_username").send_keys("ops")
        browser.find_element(By.ID, "id_password").send_keys("a-good-password")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr"), timeout=30)
        row = next(
            r
            for r in browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
            if r.text.startswith("payments")
        )
        row.find_element(By.CSS_SELECTOR, "a.dead-letters-link").click()
        wait_for(lambda: browser.find_elements(By.ID, "dead-letters"), timeout=30)
        assert browser.title.startswith("Dead letters of payments")

        rows = read_table(browser, "dead-letters")
        by_order = {message.args[0]: message.message_id for message in sent}
        newest_first = [by_order[order_id] for order_id in reversed(failures)]
        assert [r[1] for r in rows] == newest_first
        position = newest_first.index(sent[1].message_id)
        _, message_id, actor, died, retries, error, arguments, _trace, _ = rows[position]
        assert (message_id, actor, retries) == (sent[1].message_id, "charge_card", "0")
        assert error == "ConnectionError: payment gateway timed out charging order 1042"
        assert arguments == "(1042, '10420.00 EUR')" and (died.endswith("ago") or died == "just now")
        screenshot = browser.get_screenshot_as_png()
        target = os.environ.get("DRAMATIQ_OTEL_SCREENSHOT_DEAD_LETTERS")
        if target:
            Path(target).write_bytes(screenshot)

        gateway_up.set()  # the cause is fixed: send 1042 again
        browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")[position].find_element(
            By.XPATH, ".//button[text()='Requeue']"
        ).click()
        # A click that submits a form does not wait for the next page: wait for what it must show.
        wait_for(lambda: browser.find_elements(By.ID, "confirm-question"), timeout=30)
        question = browser.find_element(By.ID, "confirm-question").text
        assert question.startswith("Requeue 1 dead-lettered message of payments?")
        browser.find_element(By.ID, "confirm").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".messagelist"), timeout=30)
        assert (
            "1 dead-lettered message(s) requeued."
            in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
        )
        remaining = [message_id for message_id in newest_first if message_id != sent[1].message_id]
        assert [r[1] for r in read_table(browser, "dead-letters")] == remaining

        wait_for(lambda: charged == [1042], timeout=30)
        deadline = time.monotonic() + 30
        while len([s for s in spans_named(span_exporter, "process payments") if s.status.is_ok]) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        worker.stop()

    (send,) = [
        s
        for s in spans_named(span_exporter, "send payments")
        if s.attributes[semconv.MESSAGING_MESSAGE_ID] == sent[1].message_id
    ]
    processes = [
        s
        for s in spans_named(span_exporter, "process payments")
        if s.attributes[semconv.MESSAGING_MESSAGE_ID] == sent[1].message_id
    ]
    first, again = sorted(processes, key=lambda span: span.start_time)
    assert send.context.trace_id == first.context.trace_id == again.context.trace_id
    assert again.parent.span_id == send.context.span_id
    assert again.attributes[semconv.DRAMATIQ_REQUEUES] == 1 and again.status.is_ok
    link = TRACE_URL.format(trace_id=trace.format_trace_id(send.context.trace_id))
    browser.get(f"{live_server.url}/admin/dramatiq_otel/deadletter/payments/")
    assert link not in {
        a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.trace-link")
    }
    assert len(read_table(browser, "dead-letters")) == 2
    cleanup_broker(broker, namespace)
