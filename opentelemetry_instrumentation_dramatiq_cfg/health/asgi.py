"""The health answer as an ASGI app, to mount in FastAPI, Starlette, or any ASGI server::

    from opentelemetry_instrumentation_dramatiq_cfg.health.asgi import make_asgi_app

    app.mount("/health", make_asgi_app("redis://localhost:6379/0"))

The broker read is blocking (redis-py, pika): it runs in a worker thread, never on the event loop.
Lifespan events are acknowledged, so the app can also be served alone (``uvicorn``). See
:mod:`.http` for the answers and who sees the details, :class:`.probe.Probe` for the arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .config import HealthConfig
from .http import respond
from .probe import Probe

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_asgi_app(
    broker: Any = None,
    *,
    queues: Iterable[str] | None = None,
    config: HealthConfig | None = None,
    namespace: str | None = None,
) -> ASGIApp:
    """An ASGI app answering the health JSON at whatever path it is mounted on."""
    probe = Probe(broker, queues=queues, config=config, namespace=namespace)

    async def health_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"the health app answers HTTP only, not {scope['type']!r}")
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        method = str(scope["method"]).upper()
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        status, response_headers, body = await asyncio.to_thread(
            respond, probe.check, probe.config, method, query, headers
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in response_headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    health_app.probe = probe  # type: ignore[attr-defined]
    return health_app
