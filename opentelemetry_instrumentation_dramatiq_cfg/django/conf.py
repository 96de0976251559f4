"""The ``DRAMATIQ_HEALTH`` settings block, with its defaults and its validation.

===========================  ==========  ==================================================================
Key                          Default     Meaning
===========================  ==========  ==================================================================
``ENABLED``                  ``True``    ``False``: the view answers ``{"status": "disabled"}`` (HTTP 200).
``BROKER``                   ``None``    The broker to read: ``None`` for the one django_dramatiq configured
                                         from ``DRAMATIQ_BROKER`` (the global broker), or a dotted path to a
                                         broker object.
``TIMEOUT``                  ``2.0``     Seconds a broker read may take before the answer is ``unhealthy``.
``MIN_WORKERS``              ``1``       Active workers needed for ``healthy`` (fewer: ``degraded``).
``WORKER_TIMEOUT``           ``60.0``    Seconds without a registry beat before a worker is ``stale``.
``STALL_TIMEOUT``            ``600.0``   Seconds every thread of a live worker may hold a message with none
                                         finished before the worker is ``stalled`` (the answer: ``degraded``).
``DETAILS``                  ``"staff"`` Who sees ``queues`` and ``workers``: ``"public"``, ``"staff"`` (a
                                         logged-in staff user, or the token) or ``"token"`` (only the token).
``TOKEN``                    ``None``    Secret for the ``X-Dramatiq-Health-Token`` header (required with
                                         ``DETAILS="token"``); compared in constant time.
``UNHEALTHY_STATUS``         ``500``     HTTP status of an ``unhealthy`` answer: 500 or 503.
``INSTRUMENT``               ``False``   ``True``: the app calls ``DramatiqInstrumentor().instrument()`` in
                                         ``ready()``, with ``INSTRUMENT_OPTIONS`` as keyword arguments.
``INSTRUMENT_OPTIONS``       ``{}``      Options of ``instrument()`` (e.g. ``{"failure_hooks": [...]}``).
``ALERT_WINDOW``             ``300``     Seconds during which ``mail_admins_on_failure`` sends at most one
                                         mail per actor.
``TRACE_URL``                ``None``    Link to a trace, with ``{trace_id}`` where its id goes, e.g.
                                         ``"http://localhost:16686/trace/{trace_id}"`` (Jaeger); used by the
                                         monitoring page and the task records' admin. ``None``: no links.
``MONITORING_REFRESH``       ``30``      Seconds between two reloads of the admin monitoring page; ``0``
                                         turns auto-refresh off.
``REDACT_ARGS``              ``None``    Called as ``hook(actor_name, args, kwargs)`` before the dead-letter
                                         pages show a message's arguments (only when ``capture_args`` is on);
                                         returns the ``(args, kwargs)`` to show. A callable or a dotted path.
``RABBITMQ_MANAGEMENT_URL``  ``None``    RabbitMQ only: the management HTTP API, e.g.
                                         ``"http://user:password@rabbitmq:15672/"``, to count messages
                                         workers hold (ready + unacknowledged). ``None``: the
                                         ``DRAMATIQ_RABBITMQ_MANAGEMENT_URL`` variable, else ready counts
                                         only. Never shown nor logged.
===========================  ==========  ==================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import quote

from django.conf import settings

from ..health.config import DETAILS_MODES, TOKEN_HEADER, HealthConfig
from ..health.config import problems as shared_problems

__all__ = [
    "DETAILS_MODES",
    "KEYS",
    "SETTING",
    "TOKEN_HEADER",
    "HealthSettings",
    "health_settings",
    "problems",
]

SETTING: Final = "DRAMATIQ_HEALTH"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class HealthSettings(HealthConfig):
    """The ``DRAMATIQ_HEALTH`` block: the keys every health front shares (:class:`HealthConfig`: the
    thresholds, ``DETAILS``, ``TOKEN``, ...) and the Django app's own."""

    #: The broker to read: `None` for the one django_dramatiq built from `DRAMATIQ_BROKER` (the global broker;
    #: the view never creates one), or a dotted path to a broker object.
    BROKER: Any = None
    #: `True`: the app calls `DramatiqInstrumentor().instrument(**INSTRUMENT_OPTIONS)` in `ready()`.
    INSTRUMENT: bool = False
    #: Keyword arguments for `instrument()` (e.g. `{"failure_hooks": [...]}`).
    INSTRUMENT_OPTIONS: dict[str, Any] = field(default_factory=dict)
    #: Seconds during which `mail_admins_on_failure` mails at most once per actor.
    ALERT_WINDOW: float = 300.0
    #: Address of a trace, `{trace_id}` standing for its 32 hex digits, e.g.
    #: `"http://localhost:16686/trace/{trace_id}"` (Jaeger) or a Grafana/Tempo explore URL; the monitoring
    #: page and the task records' admin link trace ids to it. `None`: ids, no links. Must start with
    #: `http://`, `https://` or `/`.
    TRACE_URL: str | None = None
    #: Seconds between two reloads of the admin monitoring page; `0` turns auto-refresh off.
    MONITORING_REFRESH: float = 30
    #: `hook(actor_name, args, kwargs)` returning the `(args, kwargs)` the dead-letter pages show (only
    #: with `capture_args` on), to hide what staff should not read; a callable or a dotted path.
    REDACT_ARGS: Any = None

    def trace_url(self, trace_id: str | None) -> str | None:
        """``TRACE_URL`` for this trace id; ``None`` without ``TRACE_URL`` or a valid 32-hex id."""
        if not self.TRACE_URL or not trace_id or not _TRACE_ID.fullmatch(trace_id):
            return None
        return self.TRACE_URL.replace("{trace_id}", quote(trace_id))


KEYS: Final = frozenset(f.name for f in fields(HealthSettings))


def raw_settings() -> Any:
    return getattr(settings, SETTING, {})


def problems(raw: Any) -> list[str]:
    """What is wrong with the settings block, in words (empty when it is fine)."""
    if not isinstance(raw, dict):
        return [f"{SETTING} must be a dict, got {type(raw).__name__}"]
    found = []
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        found.append(f"{SETTING} has unknown keys {unknown}; known keys: {sorted(KEYS)}")
    found += shared_problems(raw, lambda key: f"{SETTING}['{key}']")
    if "INSTRUMENT" in raw and not isinstance(raw["INSTRUMENT"], bool):
        found.append(f"{SETTING}['INSTRUMENT'] must be True or False, got {raw['INSTRUMENT']!r}")
    value = raw.get("ALERT_WINDOW", 1)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        found.append(f"{SETTING}['ALERT_WINDOW'] must be a positive number of seconds, got {value!r}")
    if not isinstance(raw.get("INSTRUMENT_OPTIONS", {}), dict):
        found.append(f"{SETTING}['INSTRUMENT_OPTIONS'] must be a dict of instrument() keyword arguments")
    refresh = raw.get("MONITORING_REFRESH", 30)
    if (
        isinstance(refresh, bool)
        or not isinstance(refresh, int | float)
        or not (refresh == 0 or refresh >= 1)
    ):
        found.append(f"{SETTING}['MONITORING_REFRESH'] must be 0 (off) or at least 1 second, got {refresh!r}")
    trace_url = raw.get("TRACE_URL")
    if trace_url is not None and (
        not isinstance(trace_url, str)
        or "{trace_id}" not in trace_url
        or not trace_url.startswith(("http://", "https://", "/"))
    ):
        found.append(
            f"{SETTING}['TRACE_URL'] must be an http(s) URL or a path containing {{trace_id}}, "
            f"e.g. 'http://localhost:16686/trace/{{trace_id}}', got {trace_url!r}"
        )
    redact_args = raw.get("REDACT_ARGS")
    if (
        redact_args is not None
        and not callable(redact_args)
        and not (isinstance(redact_args, str) and "." in redact_args)
    ):
        found.append(f"{SETTING}['REDACT_ARGS'] must be a callable or a dotted path, got {redact_args!r}")
    broker = raw.get("BROKER")
    if broker is not None and isinstance(broker, str) and "." not in broker:
        found.append(f"{SETTING}['BROKER'] must be a dotted path 'module.attribute', got {broker!r}")
    return found


def health_settings() -> HealthSettings:
    """The settings block with defaults filled in; raises ``ImproperlyConfigured`` if it is wrong."""
    from django.core.exceptions import ImproperlyConfigured

    raw = raw_settings()
    found = problems(raw)
    if found:
        raise ImproperlyConfigured("; ".join(found))
    return HealthSettings(**raw)
