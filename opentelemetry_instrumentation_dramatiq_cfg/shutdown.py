"""Flush telemetry on the first stop signal of a ``dramatiq`` worker process.

A worker process of the ``dramatiq`` command stops gracefully on its first SIGTERM (or SIGHUP) and
exits at once on the second (``sys.exit`` in the main thread, then ``os._exit``: no worker shutdown,
so no ``after_worker_shutdown`` flush). Its main process forwards every SIGTERM to its children, so
when the whole process group is signalled (systemd's default ``KillMode=control-group``, ``kill --
-PGID``, a terminal's Ctrl-\\ group) each worker process gets two SIGTERMs about a millisecond apart
and every span still in a batch processor is lost.

:func:`flush_on_first_signal` wraps Dramatiq's handler without changing what it does: every signal
still reaches it, in order. On the first one it runs first (the worker starts stopping), then the
telemetry is flushed, for at most ``timeout`` seconds, on a helper thread (the main thread may hold a
lock the exporter needs: a flush that cannot finish is abandoned at the timeout). A signal that
arrives during that flush is handed to Dramatiq's handler as soon as the flush ends, so a second
SIGTERM still kills the process, at most ``timeout`` seconds later. Spans finished before the signal
are exported; spans of messages still running when the second signal kills the process cannot be.

Only Dramatiq's own worker-process handler is wrapped: anywhere else (a ``Worker`` started in code,
a test process, ``--fork-function`` processes) the signal handlers are left alone.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

_logger = logging.getLogger(__name__)

#: Seconds the first-signal flush may delay a second signal.
DEFAULT_TIMEOUT: Final = 5.0

_SIGNALS: Final = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def is_dramatiq_worker_handler(handler: Any) -> bool:
    """Whether ``handler`` is the one ``dramatiq.cli.worker_process`` installs."""
    return (
        callable(handler)
        and getattr(handler, "__module__", None) == "dramatiq.cli"
        and getattr(handler, "__qualname__", "") == "worker_process.<locals>.termhandler"
    )


class FlushOnFirstSignal:
    """A signal handler: ``original`` for every signal, plus ``flush`` after the first one."""

    def __init__(
        self, original: Callable[[int, FrameType | None], Any], flush: Callable[[], None], timeout: float
    ):
        self.original = original
        self.flush = flush
        self.timeout = timeout
        self._signalled = False
        self._flushing = False
        self._deferred: list[tuple[int, FrameType | None]] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._flushing:  # runs nested, inside the first call: handed on when the flush is over
            self._deferred.append((signum, frame))
            return
        if self._signalled:
            self.original(signum, frame)
            return
        self._signalled = True
        self.original(signum, frame)
        self._flushing = True
        try:
            helper = threading.Thread(target=self._flush, name="dramatiq-otel-signal-flush", daemon=True)
            helper.start()
            helper.join(self.timeout)
        finally:
            self._flushing = False
        while self._deferred:
            self.original(*self._deferred.pop(0))

    def _flush(self) -> None:
        try:
            self.flush()
        except Exception:
            _logger.warning("Flushing telemetry on the stop signal failed", exc_info=True)


def flush_on_first_signal(flush: Callable[[], None], timeout: float = DEFAULT_TIMEOUT) -> bool:
    """In a ``dramatiq`` worker process's main thread, flush on the first stop signal (see the module
    docstring). Returns whether Dramatiq's handler was found and wrapped; never raises."""
    try:
        if threading.current_thread() is not threading.main_thread():
            return False
        original = signal.getsignal(signal.SIGTERM)
        if isinstance(original, FlushOnFirstSignal) or not is_dramatiq_worker_handler(original):
            return False
        handler = FlushOnFirstSignal(original, flush, timeout)  # type: ignore[arg-type]
        for signum in _SIGNALS:
            if signal.getsignal(signum) is original:
                signal.signal(signum, handler)
        return True
    except Exception:
        _logger.debug("Could not wrap the worker process's signal handler", exc_info=True)
        return False
