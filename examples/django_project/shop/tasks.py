"""The guide's ``robust_task``, unchanged in spirit: telemetry comes from the middleware, not from here.

What the guide did by hand is now done for every actor:
- retries and the final failure are told apart on the process span (``messaging.dramatiq.outcome``)
  and in ``dramatiq_tasks_total{status=...}``;
- the permanent failure reaches ``shop.failures.handle_permanent_failure`` through the failure hooks
  (settings), and the admins get one mail per actor per window (``mail_admins_on_failure``);
- every log line below carries the trace id, span id, actor and message id (LOGGING in settings).
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage

logger = logging.getLogger(__name__)


class RecoverableError(Exception):
    """A transient error: raise it and Dramatiq retries."""


class NonRecoverableError(Exception):
    """A permanent error: listed in ``throws``, so it is not retried."""


def process_data(data_id: int) -> int:
    if data_id < 0:
        raise NonRecoverableError(f"data {data_id} does not exist")
    if data_id % 2:
        raise RecoverableError(f"data {data_id} is locked, try later")
    return data_id * 2


@dramatiq.actor(max_retries=3, min_backoff=100, max_backoff=1000, throws=(NonRecoverableError,))
def robust_task(data_id: int) -> None:
    """Task with comprehensive error handling (the guide's example)."""
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0)  # the guide's `message.retries`
    logger.info("Processing data %s (attempt %s)", data_id, retries + 1)
    process_data(data_id)
    logger.info("Successfully processed data %s", data_id)
