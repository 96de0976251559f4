"""No tables: :class:`Monitoring` only gives the monitoring page its place in the admin index."""

from __future__ import annotations

from django.db import models


class Monitoring(models.Model):
    """The admin's entry for the monitoring page (``managed = False``: no table, never queried).

    Registered by :mod:`.admin`, whose "change list" is the page, at
    ``<admin>/dramatiq_otel/monitoring/`` under "Dramatiq monitoring" in the admin index.
    """

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = "Monitoring"
        verbose_name_plural = "Monitoring"
