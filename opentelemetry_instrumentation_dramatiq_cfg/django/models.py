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


class WorkerRecord(models.Model):
    """One worker process's registry record, where the Django database is the registry's store (a
    broker without a Redis of its own, e.g. RabbitMQ; see :mod:`.registry_store`).

    Written by each worker process once per beat (one upsert), deleted on a clean stop, pruned an
    hour after its last beat; read by the health view, the monitoring page and the gauges.
    """

    worker_id = models.CharField(max_length=255, primary_key=True)
    #: The beat's wall-clock time (seconds since the epoch), as in the record.
    last_seen = models.FloatField(db_index=True)
    record = models.JSONField()

    class Meta:
        default_permissions = ()
        verbose_name = "worker record"
        verbose_name_plural = "worker records"

    def __str__(self) -> str:
        return self.worker_id
