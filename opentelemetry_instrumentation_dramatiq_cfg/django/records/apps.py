from django.apps import AppConfig


class TaskRecordsConfig(AppConfig):
    name = "opentelemetry_instrumentation_dramatiq_cfg.django.records"
    label = "dramatiq_otel_records"
    verbose_name = "Dramatiq task records"
    default_auto_field = "django.db.models.BigAutoField"
