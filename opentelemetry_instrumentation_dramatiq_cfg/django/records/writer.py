"""Buffer task outcomes and write them in batches, off the task's path.

``record_task`` (a completion hook) only appends to a bounded in-memory buffer. A daemon thread,
started on first use in each process (so forked workers get their own), writes the buffer with one
``bulk_create`` every ``FLUSH_INTERVAL`` seconds or as soon as ``BATCH_SIZE`` records wait. If the
database fails, the batch goes back to the buffer and is retried; only when the buffer is full
(``MAX_BUFFER`` records, e.g. a long database outage) are the oldest records dropped, and each drop
is counted in :data:`dropped` and logged. The buffer is flushed when the worker shuts down (through
``hooks.register_flush``) and at interpreter exit.

The buffer keeps the exception's class name and its message cut to ``MESSAGE_LENGTH`` characters,
never the exception itself (its traceback would keep the task's frames alive); credentials in URLs
are redacted on the writer thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from dataclasses import replace
from datetime import datetime, timezone
from typing import Final, NamedTuple

from ...hooks import TaskOutcome, register_flush
from ...queue_state import redact

_logger = logging.getLogger(__name__)

BATCH_SIZE: Final = 500
FLUSH_INTERVAL: Final = 2.0
MAX_BUFFER: Final = 50_000
#: Characters of an exception's message kept in a record.
MESSAGE_LENGTH: Final = 1000


class _Pending(NamedTuple):
    outcome: TaskOutcome
    timestamp: datetime
    exception_type: str
    exception_message: str


_lock = threading.Lock()
_buffer: deque[_Pending] = deque()
_wake = threading.Event()
_thread: threading.Thread | None = None
_pid = os.getpid()
dropped = 0


def record_task(outcome: TaskOutcome) -> None:
    """Completion hook: queue one record (an append; the write happens on the writer thread)."""
    global dropped
    exception = outcome.exception
    if exception is None:
        pending = _Pending(outcome, datetime.now(timezone.utc), "", "")
    else:
        # keep the exception's text, not the exception: its traceback holds the task's frames
        pending = _Pending(replace(outcome, exception=None), datetime.now(timezone.utc), *describe(exception))
    with _lock:
        _ensure_thread()
        if len(_buffer) >= MAX_BUFFER:
            _buffer.popleft()
            dropped += 1
            if dropped == 1 or dropped % 1000 == 0:
                _logger.warning("Task records buffer full: %d records dropped so far", dropped)
        _buffer.append(pending)
        size = len(_buffer)
    if size >= BATCH_SIZE:
        _wake.set()


def describe(exception: BaseException) -> tuple[str, str]:
    """``(class name, message cut to MESSAGE_LENGTH)``; builtins unqualified, others with their module."""
    kind = type(exception)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exception)
    except Exception:  # a broken __str__ must not lose the record
        message = "<unprintable exception>"
    if len(message) > MESSAGE_LENGTH:
        message = message[: MESSAGE_LENGTH - 1] + "…"
    return name[:255], message


def flush() -> int:
    """Write everything buffered now; returns the number of rows written."""
    from django.db import close_old_connections

    from .models import TaskRecord

    written = 0
    while True:
        with _lock:
            batch = [_buffer.popleft() for _ in range(min(BATCH_SIZE, len(_buffer)))]
        if not batch:
            return written
        rows = [
            TaskRecord(
                actor_name=outcome.actor_name,
                queue_name=outcome.queue_name,
                duration=outcome.duration,
                outcome=outcome.outcome,
                retries=outcome.retries,
                message_id=outcome.message_id,
                trace_id=outcome.trace_id or "",
                timestamp=timestamp,
                exception_type=exception_type,
                exception_message=redact(exception_message),
            )
            for outcome, timestamp, exception_type, exception_message in batch
        ]
        try:
            TaskRecord.objects.bulk_create(rows)
            written += len(rows)
        except Exception:
            _logger.warning("Could not write %d task records; will retry", len(rows), exc_info=True)
            with _lock:
                _buffer.extendleft(reversed(batch))
            close_old_connections()
            return written
        finally:
            close_old_connections()


def _ensure_thread() -> None:
    global _thread, _pid
    if _thread is not None and _pid == os.getpid() and _thread.is_alive():
        return
    if _pid != os.getpid():  # a forked child: the parent's buffer and thread are not ours
        _buffer.clear()
        _pid = os.getpid()
    _thread = threading.Thread(target=_run, name="dramatiq-task-records", daemon=True)
    _thread.start()


def _run() -> None:
    while True:
        _wake.wait(FLUSH_INTERVAL)
        _wake.clear()
        try:
            flush()
        except Exception:
            _logger.warning("Task records writer failed", exc_info=True)


register_flush(flush)
atexit.register(flush)
