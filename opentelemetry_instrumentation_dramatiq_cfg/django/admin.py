"""The monitoring page in the Django admin: ``<admin>/dramatiq_otel/monitoring/``, staff only.

Registered on the default admin site through :class:`.models.Monitoring` (a model without a table),
so it appears in the admin index under "Dramatiq monitoring" and is wrapped by
``AdminSite.admin_view``: anonymous users are sent to the admin login, users who are not staff never
get data. The page itself is built by :mod:`.monitoring`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from .models import Monitoring
from .monitoring import build_page


def _is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@admin.register(Monitoring)
class MonitoringAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Queues, workers and recent failures, read once per page view; nothing to add or change."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"  # what the admin index links
        return [path("", self.admin_site.admin_view(self.monitoring_view), name=name)]

    def monitoring_view(self, request: HttpRequest) -> TemplateResponse:
        paused = request.GET.get("refresh") == "0"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Dramatiq monitoring",
            "page": build_page(paused=paused),
        }
        return TemplateResponse(
            request, "dramatiq_otel/monitoring.html", context
        )  # never cached (admin_view)


from . import dead_letters_admin  # noqa: E402, F401  (registers the dead-letter pages)
