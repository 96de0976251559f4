"""The dead-letter pages in the Django admin: ``<admin>/dramatiq_otel/deadletter/<queue>/``.

Linked from each queue's dead-lettered count on the monitoring page. Viewing follows the monitoring
page (active staff, through ``AdminSite.admin_view``); requeue and delete need the
``dramatiq_otel.manage_dead_letters`` permission, a POST with Django's CSRF token, and a second POST
from the confirmation page (as the admin's ``delete_selected`` action asks). A GET never changes
anything. Every action is written to the admin log; bad input (an unknown queue or action, nothing
selected, a message that is not there any more) is reported on the page and changes nothing.
"""

from __future__ import annotations

import weakref
from typing import Any, Final

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from ..queue_state import BrokerUnavailable
from ..queue_state.dead_letters import MAX_PAGE_SIZE, DeadLetters, UnknownQueue, dead_letters_for_broker
from .admin import MonitoringAdmin
from .conf import health_settings
from .dead_letters import ACTIONS, build_page, perform
from .models import DeadLetter
from .service import TaskService

PERMISSION: Final = "dramatiq_otel.manage_dead_letters"
#: Message ids listed on the confirmation page.
CONFIRM_LISTED: Final = 100

_kept: weakref.WeakKeyDictionary[Any, dict[float, DeadLetters]] = weakref.WeakKeyDictionary()


@admin.register(DeadLetter)
class DeadLetterAdmin(MonitoringAdmin):
    """One page per queue; staff only, as the monitoring page, whose permission rules it inherits.
    Not in the admin index: the monitoring page links each queue."""

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        return {}  # hidden from the index

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(require_http_methods(["GET", "HEAD", "POST"])(self.queue_view))
        return [path("<path:queue_name>/", view, name="dramatiq_otel_deadletter_queue")]

    def queue_view(self, request: HttpRequest, queue_name: str) -> HttpResponse:
        config = health_settings()
        service = TaskService(config)
        may_act = request.user.has_perm(PERMISSION)
        try:
            dead = _dead_letters(service.broker(), config.TIMEOUT)
            if request.method == "POST":
                if not may_act:
                    raise PermissionDenied(f"Requeue and delete need the {PERMISSION} permission")
                return self._post(request, dead, queue_name)
            number = _page_number(request.GET.get("p", "1"))
            listing = build_page(dead, queue_name, number, config, may_act=may_act)
        except UnknownQueue as exc:
            messages.error(request, f"{exc}: nothing was changed.")
            return HttpResponseRedirect(reverse("admin:dramatiq_otel_monitoring_changelist"))
        except BrokerUnavailable as exc:
            messages.error(request, f"The broker could not be read: {exc}")
            return HttpResponseRedirect(reverse("admin:dramatiq_otel_monitoring_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Dead letters of {queue_name}",
            "listing": listing,
            "may_act": may_act,
            "monitoring_url": reverse("admin:dramatiq_otel_monitoring_changelist"),
        }
        return TemplateResponse(request, "dramatiq_otel/dead_letters.html", context)

    def _post(self, request: HttpRequest, dead: Any, queue_name: str) -> HttpResponse:
        dead.queue(queue_name)  # UnknownQueue before anything else
        back = HttpResponseRedirect(request.path)
        action, _, one = request.POST.get("action", "").partition(":")
        scope = request.POST.get("scope", "selected")
        if action not in ACTIONS or scope not in ("selected", "all"):
            messages.error(request, "Unknown action: nothing was changed.")
            return back
        keys: list[str] | None
        if one:
            keys = [one]
        elif scope == "all":
            keys = None
        else:
            keys = list(dict.fromkeys(request.POST.getlist("_selected")))
        if keys is not None and not keys:
            messages.warning(request, "Select at least one message: nothing was changed.")
            return back
        if keys is not None and len(keys) > MAX_PAGE_SIZE:
            messages.error(request, f"At most {MAX_PAGE_SIZE} messages at once: nothing was changed.")
            return back
        if request.POST.get("post") != "yes":
            return self._confirm(request, queue_name, action, keys, dead)
        result = perform(dead, queue_name, action, keys, request.user.pk)
        verb = "requeued" if action == "requeue" else "deleted"
        if result.done:
            messages.success(request, f"{len(result.done)} dead-lettered message(s) {verb}.")
        if result.missing:
            messages.warning(
                request,
                format_html(
                    "{} message(s) were not there any more (requeued, deleted or expired meanwhile), "
                    "nothing done to them: {}",
                    len(result.missing),
                    ", ".join(result.missing[:CONFIRM_LISTED]),
                ),
            )
        if result.undecodable:
            messages.error(
                request,
                f"{len(result.undecodable)} message(s) cannot be decoded and were not requeued; "
                "they can be deleted.",
            )
        if result.held_elsewhere:
            messages.warning(
                request,
                "Some dead-lettered messages were held by another connection (another admin or "
                "program reading them) and were left as they were: reload the page and try again.",
            )
        if not (result.done or result.missing or result.undecodable or result.held_elsewhere):
            messages.info(request, "There was no dead-lettered message: nothing was changed.")
        return back

    def _confirm(
        self, request: HttpRequest, queue_name: str, action: str, keys: list[str] | None, dead: Any
    ) -> HttpResponse:
        total = dead.page(queue_name, 0, 1).total if keys is None else len(keys)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Are you sure?",
            "queue_name": queue_name,
            "action": action,
            "verb": ACTIONS[action],
            "keys": keys,
            "listed": (keys or [])[:CONFIRM_LISTED],
            "count": total,
            "scope": "all" if keys is None else "selected",
            "list_url": request.path,
        }
        return TemplateResponse(request, "dramatiq_otel/dead_letters_confirm.html", context)


def _dead_letters(broker: Any, timeout: float) -> DeadLetters:
    """The broker's dead letters, kept between requests so their connection is reused."""
    kept = _kept.setdefault(broker, {})
    if timeout not in kept:
        kept[timeout] = dead_letters_for_broker(broker, timeout=timeout)
    return kept[timeout]


def _page_number(raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        return 1
    return max(1, min(number, 10**6))
