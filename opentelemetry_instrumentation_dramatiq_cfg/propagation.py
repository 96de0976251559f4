"""Carry W3C trace context (and baggage) inside ``message.options``.

The configured global propagator (``OTEL_PROPAGATORS``, W3C trace context + baggage by default) writes
its fields as flat keys of the options dict (``traceparent``, ``tracestate``, ``baggage``), which
Dramatiq serializes with the message. No other option is read, rewritten or nested.

Reading is defensive: the options of a message come from the wire, so values that are not strings,
or longer than :data:`MAX_FIELD_LENGTH`, are ignored, and a broken carrier yields an empty context
(a new root trace) instead of an exception.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Final

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

_logger = logging.getLogger(__name__)

#: Longest carrier value read back (W3C baggage allows 8192 bytes; traceparent is 55).
MAX_FIELD_LENGTH: Final = 8192

#: The key whose presence marks a message that already carries a creation context.
TRACEPARENT: Final = "traceparent"

Carrier = MutableMapping[str, Any]


class _OptionsGetter(Getter[Carrier]):
    def get(self, carrier: Carrier, key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, str) and len(value) <= MAX_FIELD_LENGTH:
            return [value]
        return None

    def keys(self, carrier: Carrier) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


class _OptionsSetter(Setter[Carrier]):
    def set(self, carrier: Carrier, key: str, value: str) -> None:
        carrier[key] = value


getter: Final = _OptionsGetter()
setter: Final = _OptionsSetter()


def _is_mapping(options: Any) -> bool:
    # A dict, as always from Dramatiq, matches the first class, before the slower ABC check.
    return isinstance(options, (dict, MutableMapping))


def carries_context(options: Any) -> bool:
    """Whether these message options already hold a creation context."""
    return _is_mapping(options) and isinstance(options.get(TRACEPARENT), str)


def inject(options: Carrier, context: Context) -> None:
    """Write ``context`` into the message options with the global propagator."""
    propagate.inject(options, context=context, setter=setter)


def extract(options: Any) -> Context | None:
    """The context a producer stored in the message options, or ``None`` when there is none.

    Never raises: garbage in the options starts a new trace.
    """
    if not _is_mapping(options):
        return None
    try:
        return propagate.extract(options, getter=getter, context=Context())
    except Exception:  # a third-party propagator choking on wire data must not fail the task
        _logger.debug("Ignoring unreadable trace context in message options", exc_info=True)
        return None
