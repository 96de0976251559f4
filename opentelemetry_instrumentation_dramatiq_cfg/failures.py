"""Permanent failures: call the user's hooks exactly once per message that fails for good.

A message fails for good when its retries are exhausted, when it raised an exception that is not
retried (listed in the actor's ``throws``, or refused by ``retry_when``), or when no Retries middleware
would retry it. Attempts that will be retried never reach the hooks.

Hooks run on the worker thread, while the process span is still current, after Dramatiq's Retries
middleware decided the message's fate; keep them quick (the Django mail handler limits itself to one
mail per actor per window). On the Redis broker a message is claimed with ``SET NX`` before the hooks
run, so a redelivered message (a worker killed between the failure and the acknowledgement) never
alerts twice, whichever process sees it; on other brokers the guarantee is per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

_logger = logging.getLogger(__name__)

#: How long (seconds) a Redis claim on a failed message id is kept.
CLAIM_TTL: Final = 7 * 24 * 3600


@dataclass(frozen=True)
class PermanentFailure:
    """What a failure hook receives."""

    actor_name: str
    message_id: str
    queue_name: str
    retries: int
    exception: BaseException | None
    trace_id: str | None


class FailureHook(Protocol):
    def __call__(self, failure: PermanentFailure) -> None: ...


def dispatch(broker: Any, failure: PermanentFailure, hooks: Sequence[FailureHook]) -> int:
    """Call every hook once for this failure, unless another process already did; never raises.

    Returns the number of hooks called.
    """
    if not hooks or not _claim(broker, failure.message_id):
        return 0
    for hook in hooks:
        try:
            hook(failure)
        except Exception:
            _logger.warning("Dramatiq failure hook %r failed", hook, exc_info=True)
    return len(hooks)


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
