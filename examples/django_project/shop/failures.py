"""Failure hooks of the example (a module that declares no actor, so importing it never needs the
broker: hooks given by dotted path are imported while the broker is being built)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def handle_permanent_failure(failure) -> None:  # called once per message that fails for good
    logger.error(
        "Permanent failure of %s (message %s, trace %s): %r",
        failure.actor_name,
        failure.message_id,
        failure.trace_id,
        failure.exception,
    )
