"""Dead-lettered messages: list them, requeue them, delete them; exactly once per message.

No OpenTelemetry here (the Django admin's dead-letter pages use it)::

    from opentelemetry_instrumentation_dramatiq_cfg.queue_state.dead_letters import dead_letters_for_broker

    dead = dead_letters_for_broker(dramatiq.get_broker())
    page = dead.page("emails", offset=0, limit=50)   # newest first, one broker round trip on Redis
    dead.requeue("emails", [letter.key for letter in page.letters])
    dead.delete("emails", None)                      # None: every message dead at that moment

Each action moves a message at most once: on Redis a Lua script moves it only if it is still in the
dead-letter set (:mod:`.redis`), on RabbitMQ the move is one AMQP transaction on a channel that holds
the message (:mod:`.rabbitmq`). A second admin, a worker or a dropped connection can make a message
"missing" for an action, never doubled or lost.

A requeued message is the dead one with its retry bookkeeping reset (:data:`RESET_OPTIONS`, the
options Dramatiq's ``Retries`` middleware and brokers add) and :data:`REQUEUES_OPTION` counting the
requeues by hand; its id, arguments, other options and trace context (``traceparent``) are kept, so
its next attempt joins the original trace.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..base import DEFAULT_TIMEOUT
from .base import (
    MAX_PAGE_SIZE,
    REQUEUES_OPTION,
    RESET_OPTIONS,
    ActionResult,
    DeadLetter,
    DeadLetterPage,
    DeadLetters,
    UnknownQueue,
    requeued,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "REQUEUES_OPTION",
    "RESET_OPTIONS",
    "ActionResult",
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetters",
    "UnknownQueue",
    "dead_letters_for_broker",
    "requeued",
]


def dead_letters_for_broker(broker: Any, *, timeout: float = DEFAULT_TIMEOUT) -> DeadLetters:
    """The dead letters of this broker (Redis, RabbitMQ or Stub, subclasses included)."""
    for module, name, implementation in (
        ("dramatiq.brokers.stub", "StubBroker", "stub"),
        ("dramatiq.brokers.redis", "RedisBroker", "redis"),
        ("dramatiq.brokers.rabbitmq", "RabbitmqBroker", "rabbitmq"),
    ):
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        if isinstance(broker, cls):
            found = importlib.import_module(f"{__name__}.{implementation}")
            result: DeadLetters = found.DEAD_LETTERS(broker, timeout=timeout)
            return result
    raise TypeError(
        f"No dead-letter support for {type(broker).__module__}.{type(broker).__qualname__}: "
        "supported brokers are RedisBroker, RabbitmqBroker and StubBroker"
    )
