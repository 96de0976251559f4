"""Log correlation: stamp every log record with the trace, span, actor and message being processed.

:class:`DramatiqLogFilter` is a ``logging.Filter`` that never drops a record; it adds

=====================  =============================================================
``otelTraceID``        trace id of the current span (32 hex digits), ``"0"`` if none
``otelSpanID``         span id of the current span (16 hex digits), ``"0"`` if none
``otelTraceSampled``   whether the current span is sampled
``dramatiq_actor``     actor of the message being processed on this thread, ``""`` if none
``dramatiq_message_id``  id of that message, ``""`` if none
=====================  =============================================================

The ``otel*`` names are those of ``opentelemetry-instrumentation-logging``, so formats written for
it work unchanged. A filter was chosen over that instrumentation's global ``LogRecordFactory``
because it is opt-in per handler, composes with Django's ``LOGGING`` dict config, and adds the
Dramatiq fields, which that instrumentation does not know. Attach it to the *handlers* (a filter on a
logger does not see records propagated from its children)::

    LOGGING = {
        "version": 1,
        "filters": {"otel": {"()": "opentelemetry_instrumentation_dramatiq_cfg.logs.DramatiqLogFilter"}},
        "formatters": {"dramatiq": {"style": "{", "format": "[{asctime}] [{levelname}] [{name}] "
                       "[trace_id={otelTraceID} span_id={otelSpanID} actor={dramatiq_actor} "
                       "message_id={dramatiq_message_id}] {message}"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "dramatiq",
                                 "filters": ["otel"]}},
        "loggers": {"dramatiq": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from .processing import current_message


class DramatiqLogFilter(logging.Filter):
    """Add trace/span ids and the Dramatiq actor and message id to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.otelTraceID = trace.format_trace_id(context.trace_id)
            record.otelSpanID = trace.format_span_id(context.span_id)
            record.otelTraceSampled = context.trace_flags.sampled
        else:
            record.otelTraceID = record.otelSpanID = "0"
            record.otelTraceSampled = False
        actor_name, message_id = current_message()
        record.dramatiq_actor = actor_name
        record.dramatiq_message_id = message_id
        return True
