"""System checks: a wrong ``DRAMATIQ_HEALTH`` block or a misplaced middleware, at start-up."""

from __future__ import annotations

from typing import Any

import dramatiq.broker
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import SETTING, problems, raw_settings

MIDDLEWARE_PATH = "opentelemetry_instrumentation_dramatiq_cfg.middleware.OpenTelemetryMiddleware"


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(problem, hint=f"See {SETTING} in the docs' configuration reference.", id="dramatiq_otel.E001")
        for problem in problems(raw_settings())
    ]


@register()
def check_middleware_order(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The OpenTelemetry middleware must come first to see Retries' decision and enclose the rest."""
    broker = dramatiq.broker.global_broker
    if broker is None:
        return []
    names = [f"{type(m).__module__}.{type(m).__qualname__}" for m in broker.middleware]
    if MIDDLEWARE_PATH in names and names.index(MIDDLEWARE_PATH) != 0:
        return [
            Warning(
                "The OpenTelemetry middleware is not the first middleware of the Dramatiq broker: "
                "final failures may be reported as retries and its spans will not enclose the "
                f"middleware before it ({', '.join(names[: names.index(MIDDLEWARE_PATH)])}).",
                hint=f'Move "{MIDDLEWARE_PATH}" to the top of DRAMATIQ_BROKER["MIDDLEWARE"].',
                id="dramatiq_otel.W001",
            )
        ]
    return []
