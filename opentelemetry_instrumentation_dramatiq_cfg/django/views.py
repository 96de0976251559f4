"""The health view: the guide's JSON, with per-queue details for those allowed to see them.

``GET /health/`` answers ``{"status": "healthy" | "degraded" | "unhealthy" | "disabled", ...}``;
``unhealthy`` comes with HTTP 500 (or 503, ``UNHEALTHY_STATUS``). ``?details=0|1`` drops or asks
for ``queues`` and ``workers``: asking without being allowed (see ``DETAILS``) is 403; a bad value is
400. Answers are never cached.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .conf import TOKEN_HEADER, HealthSettings
from .service import TaskService

_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    service = TaskService()
    raw = request.GET.get("details")
    if raw is not None and raw.lower() not in _FLAGS:
        return JsonResponse({"error": "details must be 0 or 1"}, status=400)
    allowed = may_see_details(request, service.config)
    wanted = allowed if raw is None else _FLAGS[raw.lower()]
    if wanted and not allowed:
        return JsonResponse({"error": "queue details need a staff user or the health token"}, status=403)
    status, body = service.health(details=wanted)
    return JsonResponse(body, status=status)


def may_see_details(request: HttpRequest, config: HealthSettings) -> bool:
    if config.DETAILS == "public":
        return True
    token = request.headers.get(TOKEN_HEADER, "")
    if config.TOKEN and token and hmac.compare_digest(token.encode(), config.TOKEN.encode()):
        return True
    user = getattr(request, "user", None)
    return config.DETAILS == "staff" and bool(getattr(user, "is_staff", False))
