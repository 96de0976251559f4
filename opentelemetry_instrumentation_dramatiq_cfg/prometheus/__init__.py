"""One Prometheus endpoint for every process of a command: ``OTEL_METRICS_EXPORTER=dramatiq_prometheus``.

The OpenTelemetry Prometheus exporter serves the metrics of the process it runs in. Under the
``dramatiq`` command that is the main process, which runs no task: the worker processes' series never
reach it (fork), or every worker process fails to bind the same port and loses its SDK (spawn,
forkserver). This reader serves them all from one port::

    OTEL_METRICS_EXPORTER=dramatiq_prometheus opentelemetry-instrument dramatiq my_app --processes 4

The main process serves ``OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT`` (default
``localhost:9464``); each worker process writes a snapshot of its cumulative metrics every few
seconds and at worker shutdown; a scrape sums them. The series are named exactly as the OTel
Prometheus exporter names them for one process. See :mod:`.reader` for the roles and options, over
:mod:`.serving` (the endpoint), :mod:`.writing` (the snapshots) and :mod:`.merging` (the scrape);
:mod:`.snapshot` for the arithmetic, :mod:`.exposition` for the naming.
"""

from __future__ import annotations

from .reader import DramatiqPrometheusMetricReader

__all__ = ["DramatiqPrometheusMetricReader"]
