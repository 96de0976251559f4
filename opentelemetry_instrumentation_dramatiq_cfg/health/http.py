"""The health answer over HTTP, framework-free: what the WSGI and ASGI apps answer to a request (the
Django view, which has staff users too, keeps its own).

``GET`` (or ``HEAD``) answers the JSON of :meth:`Probe.check`; ``?details=0|1`` drops or asks for
``queues`` and ``workers``: asking without being allowed is 403, a bad value 400, another method 405.
Who may see the details is ``DETAILS``: ``"public"`` everyone, otherwise only a request carrying
``TOKEN`` in the ``X-Dramatiq-Health-Token`` header (there are no staff users outside Django, so by
default no queue name leaves the process). Answers are never cached.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

from .config import TOKEN_HEADER, HealthConfig

#: The headers of every answer (``Cache-Control`` as Django's ``never_cache`` sets it).
HEADERS: Final = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private"),
)
_FLAGS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_REASONS: Final = {200: "OK", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed"}
_REASONS_ERR: Final = {500: "Internal Server Error", 503: "Service Unavailable"}

#: ``check(details=...)`` -> (HTTP status, body): :meth:`Probe.check`.
Check = Callable[..., tuple[int, dict[str, Any]]]


def may_see_details(config: HealthConfig, token: str) -> bool:
    """``DETAILS="public"``, or ``token`` is ``TOKEN`` (compared in constant time)."""
    if config.DETAILS == "public":
        return True
    return bool(config.TOKEN and token and hmac.compare_digest(token.encode(), config.TOKEN.encode()))


def respond(
    check: Check, config: HealthConfig, method: str, query: str, headers: Mapping[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for one request; ``headers`` with lower-case names."""
    if method not in ("GET", "HEAD"):
        status, body = 405, {"error": "only GET and HEAD"}
        return _encode(status, body, [("Allow", "GET, HEAD")])
    values = urllib.parse.parse_qs(query, keep_blank_values=True).get("details")
    raw = values[-1] if values else None
    if raw is not None and raw.lower() not in _FLAGS:
        return _encode(400, {"error": "details must be 0 or 1"})
    allowed = may_see_details(config, headers.get(TOKEN_HEADER.lower(), ""))
    wanted = allowed if raw is None else _FLAGS[raw.lower()]
    if wanted and not allowed:
        return _encode(403, {"error": "queue details need the health token"})
    status, body = check(details=wanted)
    return _encode(status, body)


def reason(status: int) -> str:
    return _REASONS.get(status) or _REASONS_ERR.get(status, "")


def _encode(
    status: int, body: dict[str, Any], extra: list[tuple[str, str]] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    content = json.dumps(body).encode()  # as Django's JsonResponse encodes it
    return status, [*HEADERS, ("Content-Length", str(len(content))), *(extra or [])], content
