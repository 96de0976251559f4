from __future__ import annotations

from django.apps import AppConfig


class DramatiqHealthConfig(AppConfig):
    name = "opentelemetry_instrumentation_dramatiq_cfg.django"
    label = "dramatiq_otel"
    verbose_name = "Dramatiq monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import health_settings, problems, raw_settings

        if problems(raw_settings()):
            return  # the system checks report it, with its id
        config = health_settings()
        if config.INSTRUMENT:
            from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

            DramatiqInstrumentor().instrument(**config.INSTRUMENT_OPTIONS)
