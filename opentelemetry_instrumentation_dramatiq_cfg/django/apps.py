from __future__ import annotations

from django.apps import AppConfig


class DramatiqHealthConfig(AppConfig):
    name = "opentelemetry_instrumentation_dramatiq_cfg.django"
    label = "dramatiq_otel"
    verbose_name = "Dramatiq monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ..queue_state import registry_store
        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import health_settings, problems, raw_settings
        from .registry_store import register

        register()  # the database as the worker registry's store, for brokers without one
        if problems(raw_settings()):
            return  # the system checks report it, with its id
        config = health_settings()
        # Workers and gauges of this process judge and write as the health view does.
        registry_store.published["worker_timeout"] = config.WORKER_TIMEOUT
        if config.REGISTRY_REDIS_URL:
            registry_store.published["redis_url"] = config.REGISTRY_REDIS_URL
        if config.INSTRUMENT:
            from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor

            options = dict(config.INSTRUMENT_OPTIONS)
            if config.REGISTRY_INTERVAL is not None:
                options.setdefault("registry_interval", config.REGISTRY_INTERVAL)
            DramatiqInstrumentor().instrument(**options)
