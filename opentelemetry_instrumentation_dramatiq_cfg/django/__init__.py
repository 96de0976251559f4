"""Django integration: a health view, an admin monitoring page, a ``dramatiq_health`` command, system
checks, mail alerts.

Add ``"opentelemetry_instrumentation_dramatiq_cfg.django"`` to ``INSTALLED_APPS`` (after
``django_dramatiq``), ``path("health/", include("opentelemetry_instrumentation_dramatiq_cfg.django.urls"))``
to your urls, and configure the ``DRAMATIQ_HEALTH`` block (see :mod:`.conf`). With
``django.contrib.admin`` installed, staff find the monitoring page (:mod:`.admin`, :mod:`.monitoring`)
in the admin index. This package never imports the OpenTelemetry middleware; it reads the broker
through :mod:`..queue_state`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service import TaskService

__all__ = ["get_task_service"]


def get_task_service() -> TaskService:
    """The guide's ``get_task_service()`` (see :mod:`.service`)."""
    from .service import get_task_service as get

    return get()
