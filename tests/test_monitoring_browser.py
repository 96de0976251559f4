"""The admin monitoring page in a real browser: Debian's Chromium driven by Selenium, against Django's
live server, the real Redis broker and a real Dramatiq worker thread.

Set ``DRAMATIQ_OTEL_SCREENSHOT=docs/monitoring-page.png`` to save the screenshot used by docs/django.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg.django.records import writer
from opentelemetry_instrumentation_dramatiq_cfg.django.records.models import TaskRecord

from .conftest import cleanup_broker, make_broker, spans_named

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

PAGE = "/admin/dramatiq_otel/monitoring/"
TRACE_URL = "http://localhost:16686/trace/{trace_id}"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver from the system (Debian ``chromium``, ``chromium-driver``);
    Selenium Manager never runs (it would download a driver). Missing: skip, or fail under CI=true."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    chromedriver = _binary("chromedriver")
    if chromium is None or chromedriver is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def read_table(driver: Any, table_id: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    ]


def test_staff_follow_queues_workers_failures_and_traces_in_the_browser(
    browser, live_server, settings, django_user_model, instrument, namespace, span_exporter
):
    from selenium.webdriver.common.by import By

    settings.DRAMATIQ_HEALTH = {"TRACE_URL": TRACE_URL, "MIN_WORKERS": 1}
    settings.TIME_ZONE = "UTC"
    instrument(completion_hooks=[writer.record_task])
    broker = make_broker("redis", namespace)  # queues are private to this test's Redis namespace
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="emails")
    def send_welcome_email(user_id):
        time.sleep(0.01 * user_id)

    @dramatiq.actor(queue_name="reports", max_retries=1, min_backoff=10, max_backoff=20)
    def build_monthly_report(month):
        raise RuntimeError(f"ledger for {month} is locked by another export")

    @dramatiq.actor(queue_name="exports")
    def export_orders(batch):
        pass

    for user_id in range(1, 4):
        send_welcome_email.send(user_id)
    for user_id in range(2):
        send_welcome_email.send_with_options(args=(user_id,), delay=600_000)
    for batch in range(4):
        export_orders.send(batch)  # no worker consumes "exports": they stay pending

    django_user_model.objects.create_superuser("ops", "ops@example.com", "a-good-password")
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50, queues={"emails", "reports"})
    worker.start()
    try:

        def recorded(outcome: str, count: int) -> Callable[[], bool]:
            def check() -> bool:
                writer.flush()
                return TaskRecord.objects.filter(outcome=outcome).count() == count

            return check

        wait_for(recorded("success", 3))

        # log in as staff and open the page from the admin index
        browser.get(f"{live_server.url}/admin/")
        browser.find_element(By.ID, "id_username").send_keys("ops")
        browser.find_element(By.ID, "id_password").send_keys("a-good-password")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        # A click that submits a form does not wait for the next page: wait for what it must show.
        app = "#content-main .app-dramatiq_otel"
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, app), timeout=30)
        section = browser.find_element(By.CSS_SELECTOR, app)
        assert "dramatiq monitoring" in section.text.lower()
        section.find_element(By.LINK_TEXT, "Monitoring").click()
        assert browser.current_url == f"{live_server.url}{PAGE}"
        assert browser.title.startswith("Dramatiq monitoring")

        assert browser.find_element(By.ID, "status").text.lower() == "healthy"
        assert read_table(browser, "failures") == [["No permanent failure recorded."]]

        # a task fails for good: after a refresh its row is there, and its dead letter
        failing = build_monthly_report.send("2026-10")
        wait_for(recorded("failed", 1))
        browser.refresh()
        queues = {row[0]: row[1:] for row in read_table(browser, "queues")}
        # name: pending, delayed, dead-lettered, in flight, consumers
        assert queues["exports"][:3] == ["4", "0", "0"]
        assert queues["emails"][:3] == ["0", "2", "0"]
        assert queues["reports"][:3] == ["0", "0", "1"]
        assert list(queues) == ["exports", "emails", "reports"]  # by pending, then name
        ((host, pid, worker_queues, threads, last_seen, state),) = read_table(browser, "workers")
        assert (host, pid, worker_queues, threads, state) == (
            socket.gethostname(),
            str(os.getpid()),
            "emails, reports",
            "2",
            "active",
        )
        assert last_seen.endswith("ago") or last_seen == "just now"

        (failure,) = read_table(browser, "failures")
        actor, queue, outcome, retries, _duration, _when, error, _trace = failure
        assert (actor, queue, outcome, retries) == ("build_monthly_report", "reports", "failed", "1")
        assert error == "RuntimeError: ledger for 2026-10 is locked by another export"
        assert {row[0] for row in read_table(browser, "slowest")} == {
            "send_welcome_email",
            "build_monthly_report",
        }

        failed_trace_ids = {
            trace.format_trace_id(span.context.trace_id)
            for span in spans_named(span_exporter, "process reports")
            if span.attributes.get("messaging.message.id") == failing.message_id
        }
        link = browser.find_element(By.CSS_SELECTOR, "#failures a.trace-link")
        href = link.get_attribute("href")
        assert href in {TRACE_URL.format(trace_id=trace_id) for trace_id in failed_trace_ids}

        screenshot = browser.get_screenshot_as_png()
        target = os.environ.get("DRAMATIQ_OTEL_SCREENSHOT")
        if target:
            Path(target).write_bytes(screenshot)

        link.click()  # no Jaeger here: the browser goes to the trace's address all the same
        wait_for(lambda: browser.current_url == href, timeout=30)
    finally:
        worker.stop()

    # the stopped worker leaves the registry: after a refresh the page no longer lists it
    browser.get(f"{live_server.url}{PAGE}")
    ((no_worker,),) = read_table(browser, "workers")
    assert no_worker.startswith("No worker registered.")
    assert browser.find_element(By.ID, "status").text.lower() == "degraded"
    cleanup_broker(broker, namespace)
