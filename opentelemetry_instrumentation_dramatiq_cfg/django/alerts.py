"""``mail_admins_on_failure``: the guide's ``alert_on_critical_failure``, as a failure hook.

List it in the instrumentation's ``failure_hooks`` (``OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS`` or
``DRAMATIQ_HEALTH["INSTRUMENT_OPTIONS"]``). It mails ``ADMINS`` when a message fails for good, at
most once per actor per ``DRAMATIQ_HEALTH["ALERT_WINDOW"]`` seconds: the window is claimed with
``cache.add`` on Django's default cache, so with a shared cache (Redis, Memcached) a storm of
failures across all worker processes sends one mail; with the local-memory cache, one per process.
Every call adds a ``dramatiq.alert`` event to the current (process) span and counts
``dramatiq.alerts{task_name, sent}``.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from django.core.mail import mail_admins
from opentelemetry import metrics, trace

from ..hooks import TaskOutcome
from .conf import health_settings

_logger = logging.getLogger(__name__)
_alerts = metrics.get_meter(__name__).create_counter(
    "dramatiq.alerts", unit="{alert}", description="Failure alerts, by actor and whether a mail was sent."
)


def mail_admins_on_failure(failure: TaskOutcome) -> None:
    window = health_settings().ALERT_WINDOW
    sent = cache.add(f"dramatiq-otel-alert:{failure.actor_name}", failure.message_id, timeout=window)
    if sent:
        subject = f"Critical Task Failure: {failure.actor_name}"
        message = (
            "A critical task has failed:\n\n"
            f"Task: {failure.actor_name}\n"
            f"Queue: {failure.queue_name}\n"
            f"Message: {failure.message_id} (after {failure.retries} retries)\n"
            f"Error: {failure.exception!r}\n"
            f"Trace: {failure.trace_id}\n\n"
            f"Further failures of this task in the next {window:g} s are counted, not mailed.\n"
        )
        try:
            mail_admins(subject, message, fail_silently=False)
        except Exception:
            _logger.exception("Could not mail the admins about %s", failure.actor_name)
            sent = False
    attributes: dict[str, str | bool] = {"task_name": failure.actor_name, "sent": bool(sent)}
    trace.get_current_span().add_event("dramatiq.alert", attributes)
    _alerts.add(1, attributes)
