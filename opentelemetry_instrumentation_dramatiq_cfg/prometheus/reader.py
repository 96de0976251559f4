"""The metric reader behind ``OTEL_METRICS_EXPORTER=dramatiq_prometheus``.

One process serves, every other writes:

* The first process that builds the reader (the ``dramatiq`` main process, gunicorn's master, a
  single script) binds ``OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT``, makes a
  directory for snapshots and announces both in its environment (:data:`SERVER_ENV`).
* Its forked children inherit the reader; spawned children (and the forkserver) build a new one and
  find the announcement in the environment they inherited. Either way they only **write**: every
  ``export_interval`` seconds, and at worker shutdown (the middleware's flush), each writes a
  snapshot of its cumulative metrics to ``<pid>-<start>.json`` in that directory.
* On each scrape the server collects its own metrics, reads every snapshot, sums them (see
  :mod:`.snapshot`) and renders them (see :mod:`.exposition`), in the Prometheus text format or in
  OpenMetrics (with exemplars) when the scraper asks for it. Snapshots of exited processes are
  folded into the server's memory and removed, so the directory does not grow with worker restarts.

The reader is the ``MetricReader`` the SDK knows and a thin composition of three parts, each in its
own module: :mod:`.serving` (the endpoint, the announcement, this process's identity across fork,
spawn and forkserver), :mod:`.writing` (the periodic snapshot writes of a writing process) and
:mod:`.merging` (what a scrape reads and sums). It holds the role (:data:`SERVE`, :data:`WRITE` or
:data:`OFF`) and moves between them: at start, after a fork, at shutdown.

Nothing here can stop a worker: a port already taken, an unwritable directory or a bad variable is
logged once and the process carries on tracing.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
)
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData
from prometheus_client.core import Metric

from ..config import _FALSE, _TRUE
from . import snapshot
from .merging import ScrapeMerger
from .serving import DIRECTORY_ENV as DIRECTORY_ENV  # re-exported: the reader's variables live here
from .serving import SERVER_ENV as SERVER_ENV
from .serving import Endpoint, Identity, inherited_server
from .writing import SnapshotWriter

_logger = logging.getLogger(__name__)

INTERVAL_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_EXPORT_INTERVAL"
SCOPE_INFO_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SCOPE_INFO"
TARGET_INFO_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_TARGET_INFO"
DEFAULT_INTERVAL = 5.0

SERVE = "serve"
WRITE = "write"
OFF = "off"

_CUMULATIVE = {
    instrument: AggregationTemporality.CUMULATIVE
    for instrument in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    _logger.warning("%s=%r is not a positive number of seconds; using %s", name, raw, default)
    return default


def _env_port() -> int:
    raw = os.environ.get(OTEL_EXPORTER_PROMETHEUS_PORT, "9464")
    try:
        return int(raw)
    except ValueError:
        _logger.warning("%s=%r is not a port number; using 9464", OTEL_EXPORTER_PROMETHEUS_PORT, raw)
        return 9464


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    _logger.warning("%s=%r is not a flag (true/false); using %s", name, raw, default)
    return default


class DramatiqPrometheusMetricReader(MetricReader):
    """Serve the metrics of every process of one ``dramatiq`` (or gunicorn…) command on one endpoint.

    Parameters (each one left out is read from its environment variable):
      host, port: where to serve (``OTEL_EXPORTER_PROMETHEUS_HOST`` / ``..._PORT``, default
        ``localhost:9464``).
      directory: where processes write their snapshots (``OTEL_PYTHON_DRAMATIQ_PROMETHEUS_DIR``;
        default a new temporary directory, removed when the server exits). Snapshot files left in it
        by an earlier run are removed at start: a new start of the command starts from zero.
      export_interval: seconds between two snapshots of a writing process
        (``OTEL_PYTHON_DRAMATIQ_PROMETHEUS_EXPORT_INTERVAL``, default 5).
      scope_info: the ``otel_scope_*`` labels (``..._SCOPE_INFO``, default true, as the OTel
        Prometheus exporter).
      target_info: the ``target_info`` series (``..._TARGET_INFO``, default true).
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        export_interval: float | None = None,
        scope_info: bool | None = None,
        target_info: bool | None = None,
    ) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)  # type: ignore[arg-type]
        self.host = host or os.environ.get(OTEL_EXPORTER_PROMETHEUS_HOST, "localhost")
        self.port = port if port is not None else _env_port()
        interval = export_interval or _env_seconds(INTERVAL_ENV, DEFAULT_INTERVAL)
        self.scope_info = scope_info if scope_info is not None else _env_flag(SCOPE_INFO_ENV, True)
        self.target_info = target_info if target_info is not None else _env_flag(TARGET_INFO_ENV, True)
        self.role = OFF
        self.directory: Path | None = None
        self._memory = snapshot.ExemplarMemory()
        self._identity = Identity.of_this_process()
        self._endpoint: Endpoint | None = None
        self._writer = SnapshotWriter(self.collect, interval)
        self._scrape = ScrapeMerger()
        inherited = inherited_server()
        if inherited is not None:
            self.role, self.directory = WRITE, inherited
            self._writer.start()
        else:
            self._start_serving(directory)
        if hasattr(os, "register_at_fork"):
            after_fork = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := after_fork()) and method())

    @property
    def export_interval(self) -> float:
        """Seconds between two snapshots of a writing process."""
        return self._writer.interval

    @export_interval.setter
    def export_interval(self, seconds: float) -> None:
        self._writer.interval = seconds

    # -- roles -----------------------------------------------------------------------------------

    def _start_serving(self, directory: str | os.PathLike[str] | None) -> None:
        endpoint = Endpoint.start(self.host, self.port, directory, self.families, identity=self._identity)
        if endpoint is None:
            return
        self._endpoint, self.directory, self.role = endpoint, endpoint.directory, SERVE
        atexit.register(self._close_server)

    def _after_fork_in_child(self) -> None:
        self._identity = Identity.of_this_process()
        self._writer.after_fork_in_child()
        serving = self.role == SERVE
        self._scrape.after_fork_in_child(forget=serving)
        if serving:  # the parent serves; the child only writes
            if self._endpoint is not None:
                self._endpoint.leave_in_child()
            self._endpoint = None
            self.role = WRITE if self.directory is not None else OFF
        self._memory = snapshot.ExemplarMemory()
        if self.role == WRITE:
            self._writer.start()

    def _close_server(self) -> None:
        if self.role != SERVE or os.getpid() != self._identity.pid:
            return
        self.role = OFF
        if self._endpoint is not None:
            self._endpoint.close(self._identity)

    # -- MetricReader --------------------------------------------------------------------------------

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data is None or self.role == OFF:
            return
        data = snapshot.snapshot(metrics_data, self._memory, pid=self._identity.pid, time=time.time())
        if self.role == SERVE:  # the serving process's own metrics are merged from memory
            self._scrape.own = data
            return
        assert self.directory is not None
        self._writer.write(self.directory, self._identity.file, data)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._writer.stop()
        if self.role == WRITE:
            try:
                self.collect(timeout_millis=timeout_millis)  # the final counts of this process
            except Exception:
                _logger.debug("dramatiq_prometheus: final collection failed", exc_info=True)
        elif self.role == SERVE:
            self._close_server()

    # -- serving -----------------------------------------------------------------------------------

    def families(self) -> list[Metric]:
        """Every process's metrics, summed, as the scrape renders them."""
        try:
            self.collect()  # this process's own, fresh
        except Exception:
            _logger.debug("dramatiq_prometheus: collection failed", exc_info=True)
        return self._scrape.families(self.directory, scope_info=self.scope_info, target_info=self.target_info)
