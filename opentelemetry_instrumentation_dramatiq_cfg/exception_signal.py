"""Where an exception that failed a send or a process is recorded: span event, log event, or both.

The semantic conventions deprecate exceptions recorded as span events in favour of log events
(``messaging.send.exception``, ``messaging.process.exception``; docs/exceptions/README.md and
docs/messaging/messaging-exceptions.md of semantic-conventions v1.44.0) and ask existing
instrumentations for a transition variable, ``OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN``:

==============  ==================================================================
(unset, other)  span events only (what 0.1.x did; the default)
``logs``        log events only
``logs/dup``    both, for a phased rollout
==============  ==================================================================

The variable may hold a comma-separated list (as ``OTEL_SEMCONV_STABILITY_OPT_IN`` does);
``logs/dup`` wins over ``logs``. Log events go to the ``logger_provider`` option or the global
logger provider, carry the span's context, ``exception.type``/``message``/``stacktrace`` and the
severity the conventions give (WARN for send, ERROR for process).

Only failures are recorded: an exception listed in an actor's ``throws``, or ``Retry``, is handled by
Dramatiq and is recorded nowhere (recording-errors.md: handled exceptions are not recorded).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger
from opentelemetry.trace import Span

from . import semconv
from .version import __version__

_logger = logging.getLogger(__name__)

OPT_IN_VARIABLE: Final = "OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN"
LOGS: Final = "logs"
LOGS_DUP: Final = "logs/dup"

#: Longest ``exception.message`` written (the span status description is cut the same way).
MAX_MESSAGE_LENGTH: Final = 1024

#: Whether the installed API's ``LogRecord`` takes ``event_name``/``context`` (API 1.35+); before,
#: the event name is written as the ``event.name`` attribute, as the Events API did.
_MODERN_RECORD = "event_name" in inspect.signature(LogRecord.__init__).parameters


@dataclass(frozen=True)
class ExceptionSignal:
    """Which signals carry exception records."""

    span_events: bool = True
    logs: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ExceptionSignal:
        raw = environ.get(OPT_IN_VARIABLE, "")
        values = {value.strip().lower() for value in raw.split(",") if value.strip()}
        if LOGS_DUP in values:
            return cls(span_events=True, logs=True)
        if LOGS in values:
            return cls(span_events=False, logs=True)
        if values:
            _logger.warning(
                "%s=%r: no value this instrumentation knows (%s, %s); exceptions stay span events",
                OPT_IN_VARIABLE,
                raw,
                LOGS,
                LOGS_DUP,
            )
        return cls()


class ExceptionRecorder:
    """Records a failure's exception on the signals :class:`ExceptionSignal` selects."""

    def __init__(self, signal: ExceptionSignal, logger_provider: LoggerProvider | None = None) -> None:
        self.signal = signal
        self._logger = (
            get_logger(__name__, __version__, logger_provider, schema_url=semconv.SCHEMA_URL)
            if signal.logs
            else None
        )

    def record(self, span: Span | None, exception: BaseException, event_name: str) -> None:
        """Record ``exception`` (``event_name``: a ``semconv.EVENT_*_EXCEPTION``) for ``span``."""
        if span is not None and self.signal.span_events and span.is_recording():
            span.record_exception(exception, escaped=True)
        if self._logger is None:
            return
        try:
            self._emit(span, exception, event_name)
        except Exception:
            _logger.debug("Cannot emit %s", event_name, exc_info=True)

    def _emit(self, span: Span | None, exception: BaseException, event_name: str) -> None:
        assert self._logger is not None
        process = event_name == semconv.EVENT_PROCESS_EXCEPTION
        severity = SeverityNumber.ERROR if process else SeverityNumber.WARN
        attributes: dict[str, Any] = {
            semconv.EXCEPTION_TYPE: semconv.error_type(exception),
            semconv.EXCEPTION_MESSAGE: str(exception)[:MAX_MESSAGE_LENGTH],
            semconv.EXCEPTION_STACKTRACE: "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            ),
        }
        timestamp = time.time_ns()
        record: LogRecord
        if _MODERN_RECORD:
            record = LogRecord(
                timestamp=timestamp,
                context=trace.set_span_in_context(span) if span is not None else None,
                severity_number=severity,
                severity_text=severity.name,
                attributes=attributes,
                event_name=event_name,
            )
        else:  # pragma: no cover - exercised by the oldest-releases run
            span_context = span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT
            record = LogRecord(  # type: ignore[call-overload,unused-ignore]
                timestamp=timestamp,
                trace_id=span_context.trace_id,
                span_id=span_context.span_id,
                trace_flags=span_context.trace_flags,
                severity_number=severity,
                severity_text=severity.name,
                attributes={"event.name": event_name, **attributes},
            )
        self._logger.emit(record)
