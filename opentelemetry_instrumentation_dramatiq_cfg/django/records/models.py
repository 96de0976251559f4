from __future__ import annotations

from django.db import models


class TaskRecord(models.Model):
    """One processed attempt of a Dramatiq message."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        RETRY = "retry"
        FAILED = "failed"
        HANDLED = "handled"
        SKIPPED = "skipped"

    actor_name = models.CharField(max_length=255)
    queue_name = models.CharField(max_length=255)
    duration = models.FloatField(help_text="Seconds, middleware included.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    retries = models.PositiveIntegerField(default=0)
    message_id = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=32, blank=True, default="")
    timestamp = models.DateTimeField(db_index=True)
    exception_type = models.CharField(
        max_length=255, blank=True, default="", help_text="Class of the exception the attempt raised."
    )
    exception_message = models.TextField(
        blank=True, default="", help_text="Its message, truncated, credentials in URLs redacted."
    )

    class Meta:
        indexes = [
            models.Index(fields=["actor_name", "timestamp"], name="dramatiq_rec_actor_time"),
            models.Index(fields=["outcome", "timestamp"], name="dramatiq_rec_outcome_time"),
        ]
        ordering = ["-timestamp"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.outcome} in {self.duration:.3f}s"
