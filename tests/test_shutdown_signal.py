"""The first-signal flush wrapper (opentelemetry_instrumentation_dramatiq_cfg.shutdown), with real signals
sent to this process. The ``dramatiq`` command under a process-group SIGTERM is in test_worker_processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from opentelemetry_instrumentation_dramatiq_cfg import shutdown


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_the_flush_reaches_the_original_handler_after_it(restore_sigterm):
    calls: list[str] = []

    def flush() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the main process's forwarded SIGTERM, during the flush
        time.sleep(0.3)
        calls.append("flushed")

    handler = shutdown.FlushOnFirstSignal(
        lambda signum, frame: calls.append(f"original {signum}"), flush, 5.0
    )
    signal.signal(signal.SIGTERM, handler)
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    term = f"original {int(signal.SIGTERM)}"
    assert calls == [term, "flushed", term]
    os.kill(os.getpid(), signal.SIGTERM)  # and any later signal goes straight through
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [term, "flushed", term, term]


def test_a_flush_that_hangs_delays_the_second_signal_only_until_the_timeout(restore_sigterm):
    calls: list[str] = []
    release = threading.Event()

    def hanging_flush() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        release.wait(60)
        calls.append("flushed")

    handler = shutdown.FlushOnFirstSignal(lambda signum, frame: calls.append("original"), hanging_flush, 0.2)
    signal.signal(signal.SIGTERM, handler)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == ["original", "original"]
    finally:
        release.set()


@pytest.mark.expect_swallowed_errors
def test_a_failing_flush_is_logged_and_the_signal_still_handled(restore_sigterm, caplog):
    calls: list[str] = []

    def failing_flush() -> None:
        raise RuntimeError("exporter broken")

    signal.signal(
        signal.SIGTERM, shutdown.FlushOnFirstSignal(lambda s, f: calls.append("original"), failing_flush, 5)
    )
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "exporter broken" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["original"]
    assert "Flushing telemetry on the stop signal failed" in caplog.text


def test_handlers_other_than_dramatiqs_worker_handler_are_left_alone(restore_sigterm):
    def own_handler(signum, frame):
        pass

    for handler in (signal.SIG_DFL, own_handler):
        signal.signal(signal.SIGTERM, handler)
        assert shutdown.flush_on_first_signal(lambda: None) is False
        assert signal.getsignal(signal.SIGTERM) is handler


def test_the_systemd_unit_signals_the_main_process_only():
    import configparser
    from pathlib import Path

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(Path(__file__).resolve().parent.parent / "examples" / "systemd" / "dramatiq.service")
    service = unit["Service"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert "opentelemetry-instrument" in service["ExecStart"] and "/dramatiq " in service["ExecStart"]
