"""The monitoring page's Busy section in a real browser: Debian's Chromium driven by Selenium, against
Django's live server, the real Redis broker and two real Dramatiq workers in this process.

Set ``DRAMATIQ_OTEL_SCREENSHOT_BUSY=docs/busy.png`` to save the screenshot used by docs/django.md.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.middleware import OpenTelemetryMiddleware

from .conftest import cleanup_broker, make_broker, spans_named
from .test_monitoring_browser import PAGE, TRACE_URL, browser, read_table, wait_for  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


def hide_card_number(actor_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """The REDACT_ARGS hook of this test: card numbers never show."""
    return args, {key: "***" if key == "card" else value for key, value in kwargs.items()}


def test_on_call_staff_see_what_each_worker_thread_holds_and_what_is_stuck(
    browser,  # noqa: F811 (the fixture imported above)
    live_server,
    settings,
    django_user_model,
    instrument,
    namespace,
    span_exporter,
):
    from selenium.webdriver.common.by import By

    settings.DRAMATIQ_HEALTH = {
        "TRACE_URL": TRACE_URL,
        "STALL_TIMEOUT": 2.0,
        "REDACT_ARGS": hide_card_number,
        "INSTRUMENT_OPTIONS": {"capture_args": True},
    }
    settings.TIME_ZONE = "UTC"
    instrument(capture_args=True, stall_timeout=2.0)
    broker = make_broker("redis", namespace)
    dramatiq.set_broker(broker)
    (middleware,) = [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]
    middleware._registry.interval = 0.2  # beat often: the test waits for the records
    gate = threading.Event()

    @dramatiq.actor(queue_name="payments", max_retries=0)
    def charge_card(order_id, card=None):
        gate.wait(120)  # a payment gateway that never answers

    @dramatiq.actor(queue_name="payments", max_retries=0, time_limit=30_000)
    def refund_order(order_id):
        gate.wait(120)

    @dramatiq.actor(queue_name="reports", max_retries=0, time_limit=3_000)
    def export_orders(month):
        gate.wait(120)  # past its 3 s time limit: TimeLimit cannot interrupt a blocking wait

    @dramatiq.actor(queue_name="reports", max_retries=0)
    def build_monthly_report(month):
        gate.wait(120)

    charge = charge_card.send(1042, card="4111111111111111")
    refund = refund_order.send(977)
    export = export_orders.send("2026-11")
    report = build_monthly_report.send("2026-11")
    django_user_model.objects.create_superuser("ops", "ops@example.com", "a-good-password")
    payments = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50, queues={"payments"})
    reports = dramatiq.Worker(broker, worker_threads=3, worker_timeout=50, queues={"reports"})
    payments.start()
    reports.start()
    try:
        browser.get(f"{live_server.url}/admin/login/?next={PAGE}")
        browser.find_element(By.ID, "id_username").send_keys("ops")
        browser.find_element(By.ID, "id_password").send_keys("a-good-password")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait_for(lambda: browser.find_elements(By.ID, "busy-section"), timeout=30)

        def rows_by_actor() -> dict[str, tuple[str, list[str]]]:
            browser.get(f"{live_server.url}{PAGE}?refresh=0")
            return {
                cells[3]: (row.get_attribute("class"), cells)
                for row, cells in zip(
                    browser.find_elements(By.CSS_SELECTOR, "#busy tbody tr"),
                    read_table(browser, "busy"),
                    strict=True,
                )
                if len(cells) > 3
            }

        # the payments worker: both threads stuck, stalled after 2 s; the reports worker: one of its
        # three threads over its export's time limit, the others free or busy in time
        def settled() -> dict[str, tuple[str, list[str]]] | None:
            rows = rows_by_actor()
            flags = {actor: row_class for actor, (row_class, _) in rows.items()}
            wanted = {
                "charge_card": "dramatiq-busy stalled",
                "refund_order": "dramatiq-busy stalled",
                "export_orders": "dramatiq-busy over-time-limit",
                "build_monthly_report": "dramatiq-busy",
            }
            return rows if flags == wanted else None

        wait_for(settled, timeout=90)
        rows = settled() or rows_by_actor()
        header = [
            cell.get_attribute("textContent")
            for cell in browser.find_elements(By.CSS_SELECTOR, "#busy thead th")
        ]
        assert header == [
            "Host",
            "PID",
            "Thread",
            "Actor",
            "Queue",
            "Running for",
            "Note",
            "Retries",
            "Message id",
            "Trace",
            "Arguments",
        ]
        expected = {
            "charge_card": ("payments", charge, "(1042,), {'card': '***'}", "worker stalled"),
            "refund_order": ("payments", refund, "(977,)", "worker stalled"),
            "export_orders": ("reports", export, "('2026-11',)", "over its time limit (3 s)"),
            "build_monthly_report": ("reports", report, "('2026-11',)", ""),
        }
        threads = {thread.name for worker in (payments, reports) for thread in worker.workers}
        for actor, (queue, message, arguments, note) in expected.items():
            _, cells = rows[actor]
            host, pid, thread, _, row_queue, running, row_note, retries, message_id, _, row_args = cells
            assert (host, pid, row_queue, retries, message_id) == (
                socket.gethostname(),
                str(os.getpid()),
                queue,
                "0",
                message.message_id,
            )
            assert thread in threads and re.fullmatch(r"\d+ (s|min \d+ s)", running)
            assert (row_args, row_note) == (arguments, note)
        assert "4111111111111111" not in browser.page_source

        section = browser.find_element(By.ID, "busy-section")
        target = os.environ.get("DRAMATIQ_OTEL_SCREENSHOT_BUSY")
        if target:
            browser.set_window_size(1920, 1100)  # the whole table, beside the admin's navigation
            browser.execute_script("arguments[0].scrollIntoView()", section)
            Path(target).write_bytes(section.screenshot_as_png)

        # the trace link of the stuck payment leads to its process span's trace
        link = browser.find_element(
            By.XPATH, f"//table[@id='busy']//tr[td[9][normalize-space()='{charge.message_id}']]//a"
        )
        href = link.get_attribute("href")
        gate.set()
        payments.join()
        reports.join()
        (span,) = [
            s
            for s in spans_named(span_exporter, "process payments")
            if s.attributes.get("messaging.message.id") == charge.message_id
        ]
        assert href == TRACE_URL.format(trace_id=trace.format_trace_id(span.context.trace_id))

        # once the messages are done, the section says so after a refresh
        wait_for(lambda: rows_by_actor() == {}, timeout=60)
        assert read_table(browser, "busy") == [["No worker thread holds a message."]]
    finally:
        gate.set()
        payments.stop()
        reports.stop()
    cleanup_broker(broker, namespace)
