"""What each worker thread holds right now: the message in hand, for the registry record.

The worker's own hooks fill it and the registry's beat writes it; readers turn it into
:class:`MessageInHand` rows (the admin page's Busy section, the health JSON's worker details, the
``dramatiq.worker.oldest_message.age`` gauge). No broker call per message, and no formatting either:

* the registry middleware's ``before_process_message`` stores ``(time.time(), message, span)`` under
  the worker thread's ident (one tuple and one dict item, no lock: each thread writes only its own item,
  which CPython sets and pops atomically). The OpenTelemetry middleware calls it once its ``process``
  span is started, with the span: the object is kept, its trace id is formatted only at beat time;
* ``after_process_message`` / ``after_skip_message`` pop the item, on every path (Dramatiq calls one
  of them for every message whose before-hooks ran).

At each beat, :meth:`InHand.entries` reads a copy and builds, per busy thread: thread name and native id
(what ``py-spy dump`` prints), actor, queue, message id, retries, ``since`` (wall clock), trace id (and
whether it was sampled), the actor's time limit in seconds (the message's ``time_limit`` option, else
the actor's, else the ``TimeLimit`` middleware's default; ``None`` without one), and the arguments only
when ``args_limit`` is set (the OpenTelemetry middleware sets it when ``capture_args`` is on), as JSON
values, left out when their JSON is longer than ``max(args_limit, ARGS_CHARS)``. The record stays
bounded: at most one entry per thread of the worker (the beat keeps only its worker's threads).

Nothing here imports OpenTelemetry: the span is read by duck typing (``get_span_context()``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from dramatiq.common import q_name

_logger = logging.getLogger(__name__)

#: Arguments whose JSON is longer than this (or than ``capture_args_max_length``, if larger) are left out
#: of the record (``"args_omitted": true``); the page cuts what it shows to ``capture_args_max_length``.
ARGS_CHARS: Final = 4096


class InHand:
    """The messages one worker's threads hold, as its registry's beat describes them."""

    def __init__(self, broker: Any, worker: Any) -> None:
        self.broker = broker
        #: The worker's threads (Dramatiq fills the list when the worker starts).
        self.threads: list[Any] = getattr(worker, "workers", [])
        #: thread ident -> (since, message, span): the registry middleware's, shared by its workers.
        self.held: dict[int, tuple[float, Any, Any]] = {}
        #: Characters of arguments the record may carry (``None``: never carry arguments).
        self.args_limit: int | None = None

    def entries(self) -> list[dict[str, Any]]:
        """The record's ``in_hand`` list, oldest first (never raises: a bad entry is left out)."""
        threads = {thread.ident: thread for thread in list(self.threads)}
        held = sorted(
            ((ident, entry) for ident, entry in self.held.copy().items() if ident in threads),
            key=lambda item: item[1][0],
        )
        entries = []
        for ident, (since, message, span) in held:
            try:
                entries.append(self._entry(threads[ident], since, message, span))
            except Exception:
                _logger.debug("Worker registry: cannot describe a message in hand", exc_info=True)
        return entries

    def _entry(self, thread: Any, since: float, proxy: Any, span: Any) -> dict[str, Any]:
        message = getattr(proxy, "_message", proxy)
        options = message.options
        entry: dict[str, Any] = {
            "thread": str(thread.name),
            "thread_id": thread.native_id,
            "actor": str(message.actor_name),
            "queue": q_name(str(message.queue_name)),
            "message_id": str(message.message_id),
            "retries": _int(options.get("retries")),
            "since": since,
            "time_limit": self._time_limit(message),
        }
        entry.update(_trace(span))
        if self.args_limit is not None:
            entry.update(_arguments(message, max(self.args_limit, ARGS_CHARS)))
        return entry

    def _time_limit(self, message: Any) -> float | None:
        """Seconds the ``TimeLimit`` middleware gives this message (``None``: no such middleware)."""
        from dramatiq.middleware import TimeLimit

        middleware = next((m for m in self.broker.middleware if isinstance(m, TimeLimit)), None)
        if middleware is None:
            return None
        limit = message.options.get("time_limit")
        if limit is None:
            try:
                limit = self.broker.get_actor(message.actor_name).options.get("time_limit")
            except Exception:  # an actor this process does not declare
                limit = None
        if limit is None:
            limit = middleware.time_limit
        return limit / 1000 if _number(limit) else None


@dataclass(frozen=True)
class MessageInHand:
    """A message a worker thread held at the worker's last beat."""

    thread: str
    thread_id: int | None
    actor: str
    queue: str
    message_id: str
    retries: int
    #: When the thread took it (wall clock, seconds).
    since: float
    #: Seconds it had been in hand at the worker's last beat (what the record proves).
    running_for: float
    trace_id: str | None = None
    sampled: bool = False
    #: Seconds the actor's time limit allows (``None``: no ``TimeLimit`` middleware).
    time_limit: float | None = None
    #: The arguments, when the worker captures them (``capture_args``); never in :meth:`asdict`.
    args: Any = None
    kwargs: Any = None
    args_omitted: bool = False

    @property
    def over_time_limit(self) -> bool:
        return self.time_limit is not None and self.running_for > self.time_limit

    def asdict(self) -> dict[str, Any]:
        """For JSON answers: everything but the arguments (those only the admin page shows, under
        ``REDACT_ARGS``)."""
        return {
            "thread": self.thread,
            "thread_id": self.thread_id,
            "actor": self.actor,
            "queue": self.queue,
            "message_id": self.message_id,
            "retries": self.retries,
            "since": self.since,
            "running_for": self.running_for,
            "time_limit": self.time_limit,
            "over_time_limit": self.over_time_limit,
            "trace_id": self.trace_id,
            "sampled": self.sampled,
        }


def in_hand_of(record: dict[str, Any]) -> tuple[MessageInHand, ...]:
    """The ``in_hand`` entries of a registry record, oldest first; malformed ones are left out."""
    raw = record.get("in_hand")
    if not isinstance(raw, list):
        return ()
    beat = float(record["last_seen"]) if _number(record.get("last_seen")) else None
    rows = []
    for entry in raw:
        try:
            since = float(entry["since"])
            limit = entry.get("time_limit")
            args, kwargs = entry.get("args"), entry.get("kwargs")
            rows.append(
                MessageInHand(
                    thread=str(entry.get("thread", "")),
                    thread_id=_int(entry.get("thread_id")) if entry.get("thread_id") is not None else None,
                    actor=str(entry["actor"]),
                    queue=str(entry["queue"]),
                    message_id=str(entry["message_id"]),
                    retries=_int(entry.get("retries")),
                    since=since,
                    running_for=round(max(0.0, beat - since), 3) if beat is not None else 0.0,
                    trace_id=entry.get("trace_id") if isinstance(entry.get("trace_id"), str) else None,
                    sampled=entry.get("sampled") is True,
                    time_limit=float(limit) if _number(limit) else None,
                    args=args if isinstance(args, list) else None,
                    kwargs=kwargs if isinstance(kwargs, dict) else None,
                    args_omitted=entry.get("args_omitted") is True,
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return tuple(sorted(rows, key=lambda row: row.since))


def _trace(span: Any) -> dict[str, Any]:
    if span is None:
        return {"trace_id": None, "sampled": False}
    context = span.get_span_context()
    if not context.trace_id:
        return {"trace_id": None, "sampled": False}
    return {"trace_id": format(context.trace_id, "032x"), "sampled": bool(context.trace_flags & 1)}


def _arguments(message: Any, limit: int) -> dict[str, Any]:
    """``args``/``kwargs`` as JSON values (what the JSON encoder cannot take becomes its ``repr``)."""
    text = json.dumps([list(message.args), dict(message.kwargs)], default=repr)
    if len(text) > limit:
        return {"args_omitted": True}
    args, kwargs = json.loads(text)
    return {"args": args, "kwargs": kwargs}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
