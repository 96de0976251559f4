"""The monitoring page's Busy section: what each worker thread holds, from the registry read.

One row per message in hand, as the workers' last registry beats list them (see
:mod:`~..queue_state.in_hand`): host, pid, thread, actor, queue, how long it has been in hand, message
id and a link to its trace (``DRAMATIQ_HEALTH["TRACE_URL"]``), oldest first. A row stands out when its
worker is ``stalled`` (every thread busy with none finished for longer than the stall timeout) or when
the message has been in hand longer than its actor's time limit. Arguments are shown only under the
capture rules of :class:`~.arguments.ArgsRule` (the dead-letter pages' rules).

No extra read: the rows come from the snapshot the health answer read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..queue_state import WorkerStats
from ..queue_state.base import STALE, STALLED
from ..queue_state.in_hand import MessageInHand
from .arguments import ArgsRule
from .conf import HealthSettings

#: Rows of the Busy section (the oldest messages); the others are counted under the table.
BUSY_ROWS: Final = 100


def duration(seconds: float) -> str:
    """``seconds`` as ``42 s``, ``3 min 5 s``, ``2 h 4 min`` or ``3 d 2 h``."""
    seconds = int(max(0.0, seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size} {unit} {seconds % size // sub_size} {sub}"
    return f"{seconds} s"


@dataclass(frozen=True)
class BusyRow:
    worker: WorkerStats
    message: MessageInHand
    trace_url: str | None
    #: The arguments as shown ("" when not shown); ``None``: the column is off.
    arguments: str | None

    @property
    def flags(self) -> list[str]:
        """Why the row stands out: ``stalled`` (its worker), ``over-time-limit`` (the message)."""
        flags = []
        if self.worker.status == STALLED:
            flags.append("stalled")
        if self.message.over_time_limit:
            flags.append("over-time-limit")
        return flags

    def html(self) -> SafeString:
        message, flags = self.message, self.flags
        short = f"{message.trace_id[:12]}…" if message.trace_id else ""
        if self.trace_url:
            trace = format_html(
                '<a class="trace-link" href="{}" rel="noreferrer">{}</a>', self.trace_url, short
            )
        else:
            trace = format_html('<span title="{}">{}</span>', message.trace_id or "", short)
        notes = []
        if "stalled" in flags:
            notes.append(SafeString('<span class="dramatiq-flag">worker stalled</span>'))
        if "over-time-limit" in flags:
            assert message.time_limit is not None
            notes.append(
                format_html(
                    '<span class="dramatiq-flag">over its time limit ({})</span>',
                    duration(message.time_limit),
                )
            )
        arguments = (
            format_html('<td class="dramatiq-args">{}</td>', self.arguments)
            if self.arguments is not None
            else ""
        )
        return format_html(
            '<tr class="{}"><td>{}</td><td class="num">{}</td><td class="nowrap" title="native id {}">{}</td>'
            '<td>{}</td><td>{}</td><td class="num nowrap">{}</td><td>{}</td><td class="num">{}</td>'
            '<td class="nowrap"><code>{}</code></td><td class="nowrap">{}</td>{}</tr>',
            " ".join(["dramatiq-busy", *flags]),
            self.worker.host,
            self.worker.pid,
            message.thread_id if message.thread_id is not None else "?",
            message.thread,
            message.actor,
            message.queue,
            duration(message.running_for),
            SafeString(" ".join(notes)),
            message.retries,
            message.message_id,
            trace,
            arguments,
        )


def busy_rows(workers: Iterable[WorkerStats], config: HealthSettings) -> tuple[list[BusyRow], int, bool]:
    """(rows, messages in hand left out, whether the arguments column is shown)."""
    held = [
        (worker, message)
        for worker in workers
        if worker.status != STALE  # its record proves nothing about now
        for message in worker.in_hand
    ]
    held.sort(key=lambda pair: pair[1].since)
    rule = (
        ArgsRule.from_settings(config) if any(m.args is not None or m.args_omitted for _, m in held) else None
    )
    show = rule is not None and rule.show
    rows = [
        BusyRow(
            worker, message, config.trace_url(message.trace_id), _arguments(rule, message) if show else None
        )
        for worker, message in held[:BUSY_ROWS]
    ]
    return rows, max(0, len(held) - BUSY_ROWS), show


def _arguments(rule: ArgsRule | None, message: MessageInHand) -> str:
    if rule is None:
        return ""
    if message.args_omitted:
        return "(too long to record)"
    if message.args is None:
        return ""
    return rule.render_args(message.actor, tuple(message.args), message.kwargs or {})
