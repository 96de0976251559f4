"""Task hooks: what became of each processed message, for failure alerts and performance records.

Two options of the instrumentation take callables (or dotted paths to them) receiving a
:class:`TaskOutcome`:

* ``failure_hooks``: called exactly once per message that fails for good: its retries are exhausted,
  it raised an exception that is not retried (listed in the actor's ``throws``, refused by
  ``retry_when``), or no Retries middleware would retry it. Attempts that will be retried never
  reach them. On the Redis broker a message is claimed with ``SET NX`` before the hooks run, so a
  redelivered message (a worker killed between the failure and the acknowledgement) never alerts
  twice, whichever process sees it; on other brokers the guarantee is per process.
* ``completion_hooks``: called once per processed attempt, whatever its outcome (success, retry,
  failed, handled, skipped), e.g. to keep per-task performance records.

Hooks run on the worker thread, after Dramatiq's Retries middleware decided the message's fate and
while the process span is still current; keep them quick (hand slow work to a thread or a queue, as
the Django mail handler and the record writer do). A hook that raises is logged and never reaches
Dramatiq.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

_logger = logging.getLogger(__name__)

#: How long (seconds) a Redis claim on a failed message id is kept.
CLAIM_TTL: Final = 7 * 24 * 3600


@dataclass(frozen=True)
class TaskOutcome:
    """One processed attempt of a message, as hooks receive it."""

    actor_name: str
    message_id: str
    queue_name: str
    #: ``success``, ``retry``, ``failed``, ``handled`` (an exception in ``throws``) or ``skipped``.
    outcome: str
    #: The retry count of this attempt (0 for the first one), as the actor saw it.
    retries: int
    #: Seconds from the start of processing to its end, middleware included.
    duration: float
    exception: BaseException | None
    #: Trace id of the process span (32 hex digits), ``None`` when traces are off.
    trace_id: str | None


#: What a failure hook receives (the same record, for a message that failed for good).
PermanentFailure = TaskOutcome


class TaskHook(Protocol):
    def __call__(self, outcome: TaskOutcome, /) -> None: ...


def call_failure_hooks(broker: Any, failure: TaskOutcome, hooks: Sequence[TaskHook]) -> int:
    """Call every hook once for this failure, unless another process already did; never raises.

    Returns the number of hooks called.
    """
    if not hooks or not _claim(broker, failure.message_id):
        return 0
    return call_hooks(failure, hooks)


def call_hooks(outcome: TaskOutcome, hooks: Sequence[TaskHook]) -> int:
    """Call every hook with ``outcome``, logging (never raising) what they raise."""
    for hook in hooks:
        try:
            hook(outcome)
        except Exception:
            _logger.warning("Dramatiq task hook %r failed", hook, exc_info=True)
    return len(hooks)


_flushers: list[Callable[[], object]] = []


def register_flush(flush: Callable[[], object]) -> None:
    """Have ``flush()`` called when a worker shuts down (before a forked child's ``os._exit``)."""
    if flush not in _flushers:
        _flushers.append(flush)


def flush_all() -> None:
    """Call every registered flush; never raises."""
    for flush in list(_flushers):
        try:
            flush()
        except Exception:
            _logger.warning("Dramatiq flush %r failed", flush, exc_info=True)


def _claim(broker: Any, message_id: str) -> bool:
    client = getattr(broker, "client", None)
    namespace = getattr(broker, "namespace", None)
    if client is None or not isinstance(namespace, str):
        return True
    try:
        return bool(client.set(f"{namespace}:__otel_failed__:{message_id}", 1, nx=True, ex=CLAIM_TTL))
    except Exception:  # Redis unreachable: alerting twice beats not alerting
        _logger.debug("Could not claim failed message %s", message_id, exc_info=True)
        return True
