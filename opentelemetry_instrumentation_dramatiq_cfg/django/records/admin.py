from django.contrib import admin

from .models import TaskRecord


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("timestamp", "actor_name", "queue_name", "outcome", "duration", "retries", "trace_id")
    list_filter = ("outcome", "actor_name", "queue_name")
    search_fields = ("actor_name", "message_id", "trace_id")
    date_hierarchy = "timestamp"
    readonly_fields = tuple(field.name for field in TaskRecord._meta.fields)
