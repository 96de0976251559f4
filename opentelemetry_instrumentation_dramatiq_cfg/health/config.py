"""What decides the health answer, shared by every front: the Django view and command (the
``DRAMATIQ_HEALTH`` block), the ``dramatiq-health`` command and the WSGI/ASGI app (``DRAMATIQ_HEALTH_*``
environment variables and command-line options).

:class:`HealthConfig` holds the keys with their defaults; :func:`problems` says in words what is wrong
with a raw block, each key named the way its source names it (``DRAMATIQ_HEALTH['TIMEOUT']``,
``DRAMATIQ_HEALTH_TIMEOUT`` or ``--timeout``); :func:`from_environment` reads the variables. No Django,
no OpenTelemetry here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

#: Prefix of the environment variables: ``DRAMATIQ_HEALTH_MIN_WORKERS`` sets ``MIN_WORKERS``.
ENV_PREFIX: Final = "DRAMATIQ_HEALTH_"
#: The broker's URL for the command and the apps when none is given (not a ``HealthConfig`` key: the
#: Django app has its own broker); keeps a password out of the command line.
BROKER_URL_ENV: Final = ENV_PREFIX + "BROKER_URL"
DETAILS_MODES: Final = ("public", "staff", "token")
#: The request header carrying ``TOKEN``.
TOKEN_HEADER: Final = "X-Dramatiq-Health-Token"
_SECONDS: Final = ("TIMEOUT", "WORKER_TIMEOUT", "STALL_TIMEOUT")
_FLAGS: Final = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


@dataclass(frozen=True)
class HealthConfig:
    """The keys every health front shares, with their defaults (literals, so that the docs' reference
    reads them without importing anything; they equal ``queue_state``'s ``DEFAULT_*``)."""

    #: `False`: the answer is `{"status": "disabled"}` with HTTP 200 (the command exits 0).
    ENABLED: bool = True
    #: Seconds a broker read may take; past it the answer is `unhealthy`.
    TIMEOUT: float = 2.0
    #: Active workers needed for `healthy`; fewer is `degraded`.
    MIN_WORKERS: int = 1
    #: Seconds without a registry beat before a worker is `stale`. The Django app's `DRAMATIQ_HEALTH`
    #: defaults it to `OTEL_PYTHON_DRAMATIQ_WORKER_TIMEOUT`, which the `dramatiq.worker.count` gauge follows.
    WORKER_TIMEOUT: float = 60.0
    #: Seconds every thread of a live worker may hold a message with none finished before the worker is
    #: `stalled` and the answer `degraded`. Needs a worker registry store (always on Redis; on RabbitMQ a
    #: Redis named by `OTEL_PYTHON_DRAMATIQ_REGISTRY_REDIS_URL`, or the Django database).
    STALL_TIMEOUT: float = 600.0
    #: Who sees `queues` and `workers` over HTTP: `"public"`, `"staff"` (a staff user, or the token; outside
    #: Django, where there are no users, the token only) or `"token"` (the token only). The summary is
    #: always public; the commands always print the details.
    DETAILS: str = "staff"
    #: Secret (at least 16 characters) for the `X-Dramatiq-Health-Token` header, compared in constant time;
    #: required with `DETAILS="token"`.
    TOKEN: str | None = field(default=None, repr=False)
    #: HTTP status of an `unhealthy` answer: 500 or 503.
    UNHEALTHY_STATUS: int = 500
    #: RabbitMQ only: the management HTTP API (`http://user:password@rabbitmq:15672/`) to count the
    #: messages workers hold (ready + unacknowledged). `None`: the `DRAMATIQ_RABBITMQ_MANAGEMENT_URL`
    #: variable, else ready counts only. Never shown nor logged.
    RABBITMQ_MANAGEMENT_URL: str | None = field(default=None, repr=False)


#: The keys every front shares.
KEYS: Final = tuple(f.name for f in fields(HealthConfig))


def problems(raw: Mapping[str, Any], name: Callable[[str], str]) -> list[str]:
    """What is wrong with the shared keys of ``raw``, in words (empty when nothing is); ``name(key)``
    is how the message names a key. Unknown keys are the caller's business. Never repeats a URL."""
    found = []
    if "ENABLED" in raw and not isinstance(raw["ENABLED"], bool):
        found.append(f"{name('ENABLED')} must be True or False, got {raw['ENABLED']!r}")
    for key in _SECONDS:
        if not _positive(raw.get(key, 1)):
            found.append(f"{name(key)} must be a positive number of seconds, got {raw[key]!r}")
    if _positive(raw.get("TIMEOUT", 1)) and raw.get("TIMEOUT", 1) >= 3600:
        found.append(f"{name('TIMEOUT')} must be under 3600 seconds, got {raw['TIMEOUT']!r}")
    min_workers = raw.get("MIN_WORKERS", 1)
    if isinstance(min_workers, bool) or not isinstance(min_workers, int) or min_workers < 0:
        found.append(f"{name('MIN_WORKERS')} must be an integer >= 0, got {min_workers!r}")
    details = raw.get("DETAILS", "staff")
    if details not in DETAILS_MODES:
        found.append(f"{name('DETAILS')} must be one of {list(DETAILS_MODES)}, got {details!r}")
    token = raw.get("TOKEN")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        found.append(f"{name('TOKEN')} must be a string of at least 16 characters")
    if details == "token" and not token:
        found.append(f"{name('DETAILS')} is 'token' but {name('TOKEN')} is not set")
    if raw.get("UNHEALTHY_STATUS", 500) not in (500, 503):
        found.append(f"{name('UNHEALTHY_STATUS')} must be 500 or 503, got {raw.get('UNHEALTHY_STATUS')!r}")
    management = raw.get("RABBITMQ_MANAGEMENT_URL")
    if management is not None and (
        not isinstance(management, str) or not management.startswith(("http://", "https://"))
    ):  # the value itself is never repeated: it may hold a password
        found.append(f"{name('RABBITMQ_MANAGEMENT_URL')} must be an http(s) URL of the management API")
    return found


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
    )


class ConfigError(ValueError):
    """The settings are wrong; the message says which and why, on one line."""


def env_name(key: str) -> str:
    return ENV_PREFIX + key


def from_environment(
    environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None
) -> HealthConfig:
    """The ``DRAMATIQ_HEALTH_*`` variables of ``environ`` (default: ``os.environ``), then ``overrides``
    (already typed, e.g. command-line options), over the defaults. Raises :class:`ConfigError` naming
    every bad or unknown variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    names: dict[str, str] = {}
    unknown = sorted(
        variable
        for variable in environ
        if variable.startswith(ENV_PREFIX)
        and variable.removeprefix(ENV_PREFIX) not in KEYS
        and variable != BROKER_URL_ENV
    )
    for key in KEYS:
        text = environ.get(env_name(key), "").strip()
        if text:
            raw[key], names[key] = _parse(key, text), env_name(key)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key], names[key] = value, f"--{key.lower().replace('_', '-')}"
    found = [f"unknown variable {variable}; known: {[env_name(k) for k in KEYS]}" for variable in unknown]
    found += problems(raw, lambda key: names.get(key, env_name(key)))
    if found:
        raise ConfigError("; ".join(found))
    return HealthConfig(**raw)


def _parse(key: str, text: str) -> Any:
    """A variable's text as the key's type; text that does not parse is kept, for :func:`problems`
    to name."""
    if key == "ENABLED":
        return _FLAGS.get(text.lower(), text)
    if key in ("MIN_WORKERS", "UNHEALTHY_STATUS"):
        try:
            return int(text)
        except ValueError:
            return text
    if key in _SECONDS:
        try:
            return float(text)
        except ValueError:
            return text
    return text
