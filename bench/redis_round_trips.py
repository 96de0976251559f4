"""Count Redis round trips: every write of a redis-py connection to its socket (a pipeline is one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_round_trips() -> Callable[[], int]:
    """Patch redis-py for the rest of the process; returns a function giving the writes so far."""
    import redis.connection

    writes = 0
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        nonlocal writes
        writes += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    return lambda: writes
