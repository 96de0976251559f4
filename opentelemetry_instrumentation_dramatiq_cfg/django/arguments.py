"""Whether and how the admin pages show a message's arguments: the instrumentation's own capture rules.

Shown only with ``capture_args`` on (``OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS`` or
``DRAMATIQ_HEALTH["INSTRUMENT_OPTIONS"]``), ``DRAMATIQ_HEALTH["REDACT_ARGS"]`` applied first, cut to
``capture_args_max_length``, credentials in URLs redacted. The dead-letter pages and the monitoring
page's Busy section use the same :class:`ArgsRule`.
"""

from __future__ import annotations

import importlib
import reprlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Options
from ..queue_state import redact
from .conf import HealthSettings

if TYPE_CHECKING:
    from ..queue_state.dead_letters import DeadLetter


@dataclass(frozen=True)
class ArgsRule:
    """Whether and how arguments are shown: the instrumentation's ``capture_args`` rules."""

    show: bool = False
    max_length: int = 1024
    redactor: Any = None

    @classmethod
    def from_settings(cls, config: HealthSettings) -> ArgsRule:
        given = config.INSTRUMENT_OPTIONS
        try:
            options = Options.resolve(
                capture_args=given.get("capture_args"),
                capture_args_max_length=given.get("capture_args_max_length"),
            )
        except ValueError:  # a malformed OTEL_PYTHON_DRAMATIQ_* variable: the workers say which
            return cls()
        redactor = config.REDACT_ARGS
        if isinstance(redactor, str):
            module, _, name = redactor.rpartition(".")
            redactor = getattr(importlib.import_module(module), name)
        return cls(options.capture_args, options.capture_args_max_length, redactor)

    def render(self, letter: DeadLetter) -> str:
        """A dead letter's arguments as text (``""`` when not shown)."""
        if letter.message is None:
            return ""
        return self.render_args(letter.actor_name, letter.message.args, letter.message.kwargs)

    def render_args(self, actor_name: str, args: Any, kwargs: Any) -> str:
        """Arguments of a message of ``actor_name`` as text (``""`` when not shown)."""
        if not self.show:
            return ""
        try:
            if self.redactor is not None:
                args, kwargs = self.redactor(actor_name, args, kwargs)
            text = _repr(args, self.max_length) + (f", {_repr(kwargs, self.max_length)}" if kwargs else "")
        except Exception:  # a failing redactor shows nothing rather than what it should have hidden
            return "<arguments hidden: REDACT_ARGS failed>"
        text = redact(text)
        return text if len(text) <= self.max_length else text[: self.max_length - 3] + "..."


def _repr(value: Any, limit: int) -> str:
    shorter = reprlib.Repr()
    shorter.maxstring = shorter.maxother = limit
    return shorter.repr(value)
