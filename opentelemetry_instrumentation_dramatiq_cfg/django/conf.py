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
``WORKER_TIMEOUT``           ``60.0``    Seconds without a registry beat before a worker is ``stale`` (the
                                         ``dramatiq.worker.count`` gauge follows it where the app runs).
``STALL_TIMEOUT``            ``600.0``   Seconds every thread of a live worker may hold a message with none
                                         finished before the worker is ``stalled`` (the answer: ``degraded``);
                                         at least two ``REGISTRY_INTERVAL`` beats.
``REGISTRY_INTERVAL``        ``None``    Seconds between two registry beats of the workers (their
                                         ``registry_interval``): checked against ``STALL_TIMEOUT``, given
                                         to ``instrument()`` with ``INSTRUMENT``. ``None``: 5, or half of
                                         ``STALL_TIMEOUT`` when shorter.
``REGISTRY_REDIS_URL``       ``None``    A Redis keeping the worker registry beside any broker. ``None``: the
                                         ``OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL`` variable, else the Redis
                                         broker's own Redis. Never shown nor logged.
``REGISTRY_DATABASE``        ``False``   ``True``: a broker with no Redis of its own (RabbitMQ) keeps the
                                         worker registry in this database (run ``migrate``; the workers must
                                         run this Django project, e.g. ``rundramatiq``).
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

import os
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
    #: Seconds between two registry beats of the workers (their `registry_interval`, given to
    #: `instrument()` with `INSTRUMENT`); a `STALL_TIMEOUT` shorter than two beats is refused. `None`: the
    #: `OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL` variable, else 5, or half of `STALL_TIMEOUT` when shorter.
    REGISTRY_INTERVAL: float | None = None
    #: A Redis (`redis://host:6379/0`) keeping the worker registry beside any broker. `None`: the
    #: `OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL` variable, else the Redis broker's own Redis. Never shown
    #: nor logged.
    REGISTRY_REDIS_URL: str | None = field(default=None, repr=False)
    #: `True`: a broker with no Redis of its own (RabbitMQ), and no `REGISTRY_REDIS_URL`, keeps the worker
    #: registry in this app's table of the default database (run `migrate`): one upsert per worker process
    #: per beat. The workers must run this Django project (e.g. `rundramatiq`) with the same setting.
    REGISTRY_DATABASE: bool = False
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
    """The block as set, with the keys it leaves out taken from their variables (:func:`with_variables`)."""
    return with_variables(getattr(settings, SETTING, {}))


def problems(raw: Any) -> list[str]:
    """What is wrong with the settings block, in words (empty when it is fine)."""
    if not isinstance(raw, dict):
        return [f"{SETTING} must be a dict, got {type(raw).__name__}"]
    found = []
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        found.append(f"{SETTING} has unknown keys {unknown}; known keys: {sorted(KEYS)}")
    found += shared_problems(raw, lambda key: f"{SETTING}['{key}']")
    for key in ("INSTRUMENT", "REGISTRY_DATABASE"):
        if key in raw and not isinstance(raw[key], bool):
            found.append(f"{SETTING}['{key}'] must be True or False, got {raw[key]!r}")
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
    found.extend(_registry_problems(raw))
    broker = raw.get("BROKER")
    if broker is not None and isinstance(broker, str) and "." not in broker:
        found.append(f"{SETTING}['BROKER'] must be a dotted path 'module.attribute', got {broker!r}")
    return found


def _registry_problems(raw: dict[str, Any]) -> list[str]:
    found = []
    interval = raw.get("REGISTRY_INTERVAL")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < 3600
    ):
        found.append(
            f"{SETTING}['REGISTRY_INTERVAL'] must be a number of seconds in (0, 3600), got {interval!r}"
        )
    elif interval is not None:
        stall = raw.get("STALL_TIMEOUT", 600.0)
        if isinstance(stall, int | float) and not isinstance(stall, bool) and stall < 2 * interval:
            found.append(
                f"{SETTING}['STALL_TIMEOUT'] ({stall:g} s) must be at least two registry beats "
                f"(2 x REGISTRY_INTERVAL = {2 * interval:g} s): a worker's record is up to one beat old"
            )
    url = raw.get("REGISTRY_REDIS_URL")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://"))
    ):  # the value itself is never repeated: it may hold a password
        found.append(f"{SETTING}['REGISTRY_REDIS_URL'] must be a redis://, rediss:// or unix:// URL")
    return found


#: Keys that default to an ``OTEL_PYTHON_DRAMATIQ_*`` variable when the block does not set them, so
#: one variable configures the workers, their gauges and this app alike.
_FROM_VARIABLES: Final = {
    "WORKER_TIMEOUT": "OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT",
    "REGISTRY_INTERVAL": "OTEL_PYTHON_DRAMATIQ_REGISTRY_INTERVAL",
    "REGISTRY_REDIS_URL": "OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL",
}


def with_variables(raw: Any) -> Any:
    """``raw`` with the keys it leaves out taken from their variables (numbers parsed; a variable
    that is not a number is kept as text, so that the check names it)."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for key, variable in _FROM_VARIABLES.items():
        value = os.environ.get(variable, "").strip()
        if key in raw or not value:
            continue
        if key == "REGISTRY_REDIS_URL":
            raw[key] = value
            continue
        try:
            raw[key] = float(value)
        except ValueError:
            raw[key] = value
    return raw


def health_settings() -> HealthSettings:
    """The settings block with defaults filled in; raises ``ImproperlyConfigured`` if it is wrong."""
    from django.core.exceptions import ImproperlyConfigured

    raw = raw_settings()
    found = problems(raw)
    if found:
        raise ImproperlyConfigured("; ".join(found))
    return HealthSettings(**raw)
