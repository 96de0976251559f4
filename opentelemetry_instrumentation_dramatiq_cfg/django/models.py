"""No tables: :class:`Monitoring` gives the monitoring page its place in the admin index,
:class:`DeadLetter` the dead-letter pages their permission."""

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


class DeadLetter(models.Model):
    """Dead-lettered messages of one queue (``managed = False``: no table, never queried).

    Its one permission, ``dramatiq_otel.manage_dead_letters``, lets a staff user requeue and delete
    dead letters (viewing them follows the monitoring page: staff). Admin log entries of those
    actions point at it, with the queue name as the object id.
    """

    queue = models.CharField(max_length=255, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("manage_dead_letters", "Can requeue and delete dead-lettered messages")]
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"

    def __str__(self) -> str:
        return f"dead letters of {self.queue}"
