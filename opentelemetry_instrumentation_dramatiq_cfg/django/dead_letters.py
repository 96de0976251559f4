"""What the dead-letter pages show and do: one broker read per page, one SQL query for the errors.

:func:`build_page` reads one page of a queue's dead letters (newest first; one round trip on Redis)
and, when the task records app is installed, the last permanent failure recorded for each of its
messages (one query) for the error column; without a record the error is the last line of the
traceback Dramatiq's ``Retries`` middleware stored in the message. Arguments are shown only under
the instrumentation's own capture rules: ``capture_args`` on (``OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS``
or ``DRAMATIQ_HEALTH["INSTRUMENT_OPTIONS"]``), ``DRAMATIQ_HEALTH["REDACT_ARGS"]`` applied first, cut
to ``capture_args_max_length``, credentials in URLs redacted. Rows are built with ``format_html``:
every value is escaped.

:func:`perform` runs a requeue or delete and writes one admin log entry (who, what, how many).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Final

from django.apps import apps
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, transaction
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ..queue_state import redact
from ..queue_state.dead_letters import ActionResult, DeadLetter, DeadLetterPage, DeadLetters
from .arguments import ArgsRule
from .conf import HealthSettings
from .models import DeadLetter as DeadLetterModel
from .monitoring import ERROR_CHARS, PERMANENT, RECORDS_APP, ago

#: Messages per page.
PAGE_SIZE: Final = 50
#: The actions, as the form posts them.
ACTIONS: Final = {"requeue": "Requeue", "delete": "Delete"}
#: Message ids named in an admin log entry (the count is always exact).
LOGGED_IDS: Final = 20


@dataclass(frozen=True)
class Failure:
    """The last permanent failure recorded for a message (task records)."""

    exception_type: str
    exception_message: str
    retries: int


@dataclass(frozen=True)
class LetterRow:
    letter: DeadLetter
    died: str
    trace_url: str | None
    arguments: str
    failure: Failure | None
    selectable: bool

    def html(self) -> SafeString:
        letter, failure = self.letter, self.failure
        if failure is not None:
            error = format_html(
                "<code>{}</code>: {}",
                failure.exception_type,
                Truncator(failure.exception_message).chars(ERROR_CHARS),
            )
            title, retries = failure.exception_message, failure.retries
        else:
            error = format_html("{}", Truncator(letter.error).chars(ERROR_CHARS))
            title, retries = letter.traceback, letter.retries
        trace_id = letter.trace_id or ""
        short = f"{trace_id[:12]}…" if trace_id else ""
        trace = (
            format_html('<a class="trace-link" href="{}" rel="noreferrer">{}</a>', self.trace_url, short)
            if self.trace_url
            else format_html('<span title="{}">{}</span>', trace_id, short)
        )
        check = (
            format_html(
                '<input type="checkbox" name="_selected" value="{}" class="action-select" aria-label="{}">',
                letter.key,
                f"Select {letter.message_id}",
            )
            if self.selectable
            else ""
        )
        buttons = (
            format_html(
                '<button type="submit" name="action" value="requeue:{}" class="button">Requeue</button> '
                '<button type="submit" name="action" value="delete:{}" class="button">Delete</button>',
                letter.key,
                letter.key,
            )
            if self.selectable
            else ""
        )
        return format_html(
            '<tr><td class="action-checkbox">{}</td><td><code>{}</code></td><td>{}</td>'
            '<td class="nowrap" title="{}">{}</td><td class="num">{}</td>'
            '<td class="dramatiq-error" title="{}">{}</td><td class="dramatiq-args">{}</td><td>{}</td>'
            '<td class="nowrap">{}</td></tr>',
            check,
            letter.message_id,
            letter.actor_name or "(undecodable message)",
            _iso(letter.died_at),
            self.died,
            retries,
            title,
            error,
            self.arguments,
            trace,
            buttons,
        )


def _iso(seconds: float | None) -> str:
    return "" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class DeadLetterListing:
    """Everything the list template shows."""

    queue_name: str
    page: DeadLetterPage
    number: int
    rows: list[LetterRow] = field(default_factory=list)
    records_error: str | None = None
    args_shown: bool = False

    @property
    def pages(self) -> int:
        return max(1, -(-self.page.total // PAGE_SIZE))

    @property
    def first(self) -> int:
        return self.page.offset + 1 if self.page.letters else 0

    @property
    def last(self) -> int:
        return self.page.offset + len(self.page.letters)

    def body(self) -> SafeString:
        return SafeString("\n".join(row.html() for row in self.rows))


def build_page(
    dead: DeadLetters, queue_name: str, number: int, config: HealthSettings, *, may_act: bool
) -> DeadLetterListing:
    """Page ``number`` (from 1) of the queue's dead letters, newest first. Raises
    :class:`~..queue_state.dead_letters.UnknownQueue` and :class:`~..queue_state.BrokerUnavailable`."""
    page = dead.page(queue_name, (number - 1) * PAGE_SIZE, PAGE_SIZE)
    listing = DeadLetterListing(queue_name, page, number)
    failures: dict[str, Failure] = {}
    if apps.is_installed(RECORDS_APP) and page.letters:
        try:
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                failures = _failures([letter.message_id for letter in page.letters])
        except DatabaseError as exc:
            listing.records_error = redact(f"{type(exc).__name__}: {exc}")
    rule = ArgsRule.from_settings(config)
    listing.args_shown = rule.show
    now = time.time()
    listing.rows = [
        LetterRow(
            letter,
            ago(now - letter.died_at) if letter.died_at is not None else "",
            config.trace_url(letter.trace_id),
            rule.render(letter),
            failures.get(letter.message_id),
            may_act,
        )
        for letter in page.letters
    ]
    return listing


def _failures(message_ids: list[str]) -> dict[str, Failure]:
    from .records.models import TaskRecord

    found: dict[str, Failure] = {}
    records = TaskRecord.objects.filter(message_id__in=message_ids, outcome__in=PERMANENT).order_by(
        "-timestamp"
    )
    for message_id, kind, message, retries in records.values_list(
        "message_id", "exception_type", "exception_message", "retries"
    ):
        found.setdefault(message_id, Failure(kind, message, retries))
    return found


def perform(
    dead: DeadLetters, queue_name: str, action: str, keys: list[str] | None, user_id: Any
) -> ActionResult:
    """Requeue or delete ``keys`` (``None``: all), then log who did what to how many."""
    result = dead.requeue(queue_name, keys) if action == "requeue" else dead.delete(queue_name, keys)
    if result.done:
        verb = "Requeued" if action == "requeue" else "Deleted"
        ids = ", ".join(result.done[:LOGGED_IDS]) + (", ..." if len(result.done) > LOGGED_IDS else "")
        scope = "all" if keys is None else "selected"
        LogEntry.objects.create(
            user_id=user_id,
            content_type_id=ContentType.objects.get_for_model(DeadLetterModel).pk,
            object_id=queue_name[:255],
            object_repr=str(DeadLetterModel(queue=queue_name))[:200],
            action_flag=CHANGE if action == "requeue" else DELETION,
            change_message=f"{verb} {len(result.done)} dead-lettered message(s) ({scope}): {ids}",
        )
    return result
