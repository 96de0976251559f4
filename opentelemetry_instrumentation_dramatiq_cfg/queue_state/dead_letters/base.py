"""What every dead-letter implementation shares: the shapes, the argument checks, the requeue
transform. No OpenTelemetry here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from dramatiq import Message
from dramatiq.common import q_name

from ..base import DEFAULT_TIMEOUT, validate_timeout

#: Option counting how many times a message was requeued by hand (the middleware shows it on the
#: process span as ``messaging.dramatiq.message.requeues``).
REQUEUES_OPTION: Final = "dead_letter_requeues"
#: Options a requeue drops: the retry count, the last traceback and retry time (``Retries``), the
#: due time of a delayed message and Redis's per-enqueue id (the brokers).
RESET_OPTIONS: Final = ("retries", "traceback", "requeue_timestamp", "eta", "redis_message_id")
#: Most messages one page may list.
MAX_PAGE_SIZE: Final = 500
#: Messages moved per Redis script call (each call is atomic; a long one would block Redis).
BATCH: Final = 500


class UnknownQueue(ValueError):
    """The queue is not one the broker declared."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as the broker holds it."""

    #: What actions name it by: Redis's per-enqueue id, else the message id.
    key: str
    queue_name: str
    #: ``None`` when the payload could not be decoded (then only deletion is offered).
    message: Message[Any] | None
    #: When it was dead-lettered (seconds since the epoch), where the broker records it.
    died_at: float | None = None

    @property
    def message_id(self) -> str:
        return self.message.message_id if self.message is not None else self.key

    @property
    def actor_name(self) -> str:
        return self.message.actor_name if self.message is not None else ""

    @property
    def options(self) -> dict[str, Any]:
        return self.message.options if self.message is not None else {}

    @property
    def retries(self) -> int:
        retries = self.options.get("retries", 0)
        return retries if isinstance(retries, int) and not isinstance(retries, bool) else 0

    @property
    def traceback(self) -> str:
        text = self.options.get("traceback")
        return text if isinstance(text, str) else ""

    @property
    def error(self) -> str:
        """The last line of the traceback ``Retries`` stored (``Class: message``), or ``""``."""
        lines = [line for line in self.traceback.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    @property
    def trace_id(self) -> str | None:
        """The trace id of the W3C ``traceparent`` the message carries, if well formed."""
        parts = str(self.options.get("traceparent", "")).split("-")
        return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@dataclass(frozen=True)
class DeadLetterPage:
    queue_name: str
    #: Dead letters of the queue when the page was read.
    total: int
    offset: int
    letters: tuple[DeadLetter, ...] = ()


@dataclass(frozen=True)
class ActionResult:
    """Keys an action moved, keys that were not there any more, keys it could not requeue."""

    done: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    #: Payloads that cannot be decoded, so not requeued (they can be deleted).
    undecodable: tuple[str, ...] = ()
    #: Some dead letters were still held by another connection when the action's timeout ran out, so
    #: left as they were (RabbitMQ, where a message being read is invisible to everyone else).
    held_elsewhere: bool = False

    def __add__(self, other: ActionResult) -> ActionResult:
        return ActionResult(
            self.done + other.done,
            self.missing + other.missing,
            self.undecodable + other.undecodable,
            self.held_elsewhere or other.held_elsewhere,
        )


class DeadLetters(Protocol):
    """Dead letters of one broker. ``keys=None`` acts on every message dead when the action starts."""

    timeout: float

    def page(self, queue_name: str, offset: int = 0, limit: int = 50) -> DeadLetterPage: ...

    def requeue(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult: ...

    def delete(self, queue_name: str, keys: Iterable[str] | None) -> ActionResult: ...


class BrokerDeadLetters:
    """What every implementation keeps (its broker and timeout), and its argument checks."""

    def __init__(self, broker: Any, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.broker = broker
        self.timeout = validate_timeout(timeout)

    def queue(self, queue_name: str) -> str:
        """``queue_name`` if the broker declared it (canonical form), else :class:`UnknownQueue`."""
        declared = {q_name(name) for name in self.broker.get_declared_queues()}
        if not isinstance(queue_name, str) or queue_name not in declared:
            raise UnknownQueue(f"No queue named {queue_name!r} is declared on this broker")
        return queue_name

    @staticmethod
    def window(offset: int, limit: int) -> tuple[int, int]:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be an integer in [1, {MAX_PAGE_SIZE}], got {limit!r}")
        return offset, limit


def in_order(done: Iterable[str], undecodable: Iterable[str], wanted: Sequence[str] | None) -> ActionResult:
    """The result of an action on ``wanted`` keys (``None``: all), in the order they were asked for;
    the keys neither done nor undecodable are ``missing``."""
    done, undecodable = tuple(done), tuple(undecodable)
    if wanted is None:
        return ActionResult(done, (), undecodable)
    moved, bad = set(done), set(undecodable)
    return ActionResult(
        tuple(key for key in wanted if key in moved),
        tuple(key for key in wanted if key not in moved and key not in bad),
        tuple(key for key in wanted if key in bad),
    )


def decode(payload: bytes | None) -> Message[Any] | None:
    """The message in ``payload``, or ``None`` if it cannot be decoded."""
    if payload is None:
        return None
    try:
        return Message.decode(payload)
    except Exception:  # DecodeError, or an encoder that raises something else
        return None


def requeued(message: Message[Any]) -> Message[Any]:
    """The message to send again: retry bookkeeping reset, one more requeue counted, same id and
    trace context, on its canonical queue."""
    options = {key: value for key, value in message.options.items() if key not in RESET_OPTIONS}
    previous = message.options.get(REQUEUES_OPTION, 0)
    count = previous if isinstance(previous, int) and not isinstance(previous, bool) else 0
    options[REQUEUES_OPTION] = count + 1
    return dataclasses.replace(message, queue_name=q_name(message.queue_name), options=options)
