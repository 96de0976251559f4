"""The health answer as a WSGI app, to mount in Flask, Django, or any WSGI server::

    from opentelemetry_instrumentation_dramatiq_cfg.health.wsgi import make_wsgi_app

    health = make_wsgi_app("redis://localhost:6379/0")   # or a broker object, or "module:broker"

Each request reads the broker (time-limited by ``TIMEOUT``) on the server's thread. See
:mod:`.http` for the answers and who sees the details, :class:`.probe.Probe` for the arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .config import HealthConfig
from .http import reason, respond
from .probe import Probe

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_wsgi_app(
    broker: Any = None,
    *,
    queues: Iterable[str] | None = None,
    config: HealthConfig | None = None,
    namespace: str | None = None,
) -> WSGIApp:
    """A WSGI app answering the health JSON at whatever path it is mounted on."""
    probe = Probe(broker, queues=queues, config=config, namespace=namespace)

    def health_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        status, response_headers, body = respond(
            probe.check, probe.config, method, str(environ.get("QUERY_STRING", "")), headers
        )
        start_response(f"{status} {reason(status)}".rstrip(), response_headers)
        return [] if method == "HEAD" else [body]

    health_app.probe = probe  # type: ignore[attr-defined]
    return health_app
