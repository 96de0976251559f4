from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from ..conf import health_settings
from .models import TaskRecord


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "timestamp",
        "actor_name",
        "queue_name",
        "outcome",
        "duration",
        "retries",
        "exception_type",
        "trace",
    )
    list_filter = ("outcome", "actor_name", "queue_name")
    search_fields = ("actor_name", "message_id", "trace_id", "exception_type")
    date_hierarchy = "timestamp"
    readonly_fields = (*(field.name for field in TaskRecord._meta.fields), "trace")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # records are what the workers saw; nobody writes them by hand

    @admin.display(description="Trace", ordering="trace_id")
    def trace(self, record: TaskRecord) -> str:
        """The trace id, a link to ``DRAMATIQ_HEALTH["TRACE_URL"]`` when it is set."""
        url = health_settings().trace_url(record.trace_id)
        if url is None:
            return record.trace_id
        return format_html('<a class="trace-link" href="{}" rel="noreferrer">{}</a>', url, record.trace_id)
