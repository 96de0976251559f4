"""Per-task performance records (the guide's ``TaskMetric``), off by default.

Turn on by adding ``"opentelemetry_instrumentation_dramatiq_cfg.django.records"`` to
``INSTALLED_APPS`` (then ``migrate``) and its writer to the completion hooks::

    OTEL_PYTHON_DRAMATIQ_COMPLETION_HOOKS=opentelemetry_instrumentation_dramatiq_cfg.django.records.writer.record_task

Every processed attempt becomes a :class:`~.models.TaskRecord` row (actor, queue, duration, outcome,
retries, message id, trace id, timestamp). Rows are buffered in memory and written by a background
thread in batches (``bulk_create``), never on the task's path, so a slow database cannot slow a task;
the buffer is flushed when the worker shuts down. ``prune_task_records --days N`` deletes old rows.
"""
