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

Nothing here can stop a worker: a port already taken, an unwritable directory or a bad variable is
logged once and the process carries on tracing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
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
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from ..config import _FALSE, _TRUE
from . import exposition, snapshot

_logger = logging.getLogger(__name__)

#: ``<pid>:<directory>`` of the serving process, set by it for the processes it starts.
SERVER_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SERVER"
DIRECTORY_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_DIR"
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self.port = port if port is not None else self._port_from_env()
        self.export_interval = export_interval or _env_seconds(INTERVAL_ENV, DEFAULT_INTERVAL)
        self.scope_info = scope_info if scope_info is not None else _env_flag(SCOPE_INFO_ENV, True)
        self.target_info = target_info if target_info is not None else _env_flag(TARGET_INFO_ENV, True)
        self.role = OFF
        self.directory: Path | None = None
        self._memory = snapshot.ExemplarMemory()
        self._write_failed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._owns_directory = False
        self._folded = snapshot.Merge()
        self._own: dict[str, Any] | None = None
        self._set_identity()
        inherited = self._inherited_server()
        if inherited is not None:
            self.role, self.directory = WRITE, inherited
            self._start_writing()
        else:
            self._start_serving(directory)
        if hasattr(os, "register_at_fork"):
            after_fork = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := after_fork()) and method())

    # -- roles -----------------------------------------------------------------------------------

    def _port_from_env(self) -> int:
        raw = os.environ.get(OTEL_EXPORTER_PROMETHEUS_PORT, "9464")
        try:
            return int(raw)
        except ValueError:
            _logger.warning("%s=%r is not a port number; using 9464", OTEL_EXPORTER_PROMETHEUS_PORT, raw)
            return 9464

    def _set_identity(self) -> None:
        self._pid = os.getpid()
        self._file = f"{self._pid}-{time.time_ns()}.json"

    @staticmethod
    def _inherited_server() -> Path | None:
        """The directory of a live serving process announced in this process's environment."""
        announced = os.environ.get(SERVER_ENV, "")
        pid, _, directory = announced.partition(":")
        if pid.isdigit() and directory and int(pid) != os.getpid() and _alive(int(pid)):
            return Path(directory)
        return None

    def _start_serving(self, directory: str | os.PathLike[str] | None) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))  # type: ignore[arg-type]
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            _logger.error(
                "dramatiq_prometheus: cannot serve metrics on %s:%s (%s); this process keeps running "
                "and tracing, but its metrics are not exported. Another process holds the port: give "
                "this command another OTEL_EXPORTER_PROMETHEUS_PORT.",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            return
        try:
            self.directory = self._make_directory(directory)
        except OSError as exc:
            _logger.error(
                "dramatiq_prometheus: cannot use a snapshot directory (%s); serving this process only", exc
            )
            self.directory = None
        self.role = SERVE
        if self.directory is not None:
            os.environ[SERVER_ENV] = f"{self._pid}:{self.directory}"
        atexit.register(self._close_server)

    def _make_directory(self, directory: str | os.PathLike[str] | None) -> Path:
        configured = directory or os.environ.get(DIRECTORY_ENV)
        if not configured:
            self._owns_directory = True
            return Path(tempfile.mkdtemp(prefix="otel-dramatiq-prometheus-"))
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in snapshot.files(path):  # an earlier run's counts: a new start starts from zero
            stale.unlink(missing_ok=True)
        return path

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._set_identity()
        self._thread = None
        self._stop = threading.Event()
        if self.role == SERVE:
            if self._server is not None:
                with contextlib.suppress(OSError):
                    self._server.socket.close()  # the parent serves; the child only writes
                self._server = None
            self._folded = snapshot.Merge()
            self._own = None
            self.role = WRITE if self.directory is not None else OFF
        self._memory = snapshot.ExemplarMemory()
        if self.role == WRITE:
            self._start_writing()

    def _start_writing(self) -> None:
        self._thread = threading.Thread(
            target=self._write_periodically, name="otel-dramatiq-prometheus", daemon=True
        )
        self._thread.start()

    def _write_periodically(self) -> None:
        while not self._stop.wait(self.export_interval):
            try:
                self.collect()
            except Exception:
                _logger.debug("dramatiq_prometheus: collection failed", exc_info=True)

    # -- MetricReader --------------------------------------------------------------------------------

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data is None or self.role == OFF:
            return
        data = snapshot.snapshot(metrics_data, self._memory, pid=self._pid, time=time.time())
        if self.role == SERVE:  # the serving process's own metrics are merged from memory
            self._own = data
            return
        assert self.directory is not None
        try:
            snapshot.write(self.directory / self._file, data)
        except OSError as exc:
            level = logging.DEBUG if self._write_failed else logging.WARNING
            self._write_failed = True
            _logger.log(
                level,
                "dramatiq_prometheus: cannot write this process's metrics to %s (%s); tasks are not affected",
                self.directory,
                exc,
            )

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._stop.set()
        if self.role == WRITE:
            try:
                self.collect(timeout_millis=timeout_millis)  # the final counts of this process
            except Exception:
                _logger.debug("dramatiq_prometheus: final collection failed", exc_info=True)
        elif self.role == SERVE:
            self._close_server()

    def _close_server(self) -> None:
        if self.role != SERVE or os.getpid() != self._pid:
            return
        self.role = OFF
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if os.environ.get(SERVER_ENV, "").startswith(f"{self._pid}:"):
            del os.environ[SERVER_ENV]
        if self.directory is not None and self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- serving -----------------------------------------------------------------------------------

    def families(self) -> list[Metric]:
        """Every process's metrics, summed, as the scrape renders them."""
        try:
            self.collect()  # this process's own, fresh
        except Exception:
            _logger.debug("dramatiq_prometheus: collection failed", exc_info=True)
        with self._lock:
            merge = self._merge()
        resource = self._own.get("resource", {}) if self._own is not None else {}
        return exposition.families(merge, resource, scope_info=self.scope_info, target_info=self.target_info)

    def _merge(self) -> snapshot.Merge:
        merge = snapshot.Merge()
        if self._own is not None:
            merge.add(self._own, live=True)
        for path in snapshot.files(self.directory) if self.directory is not None else ():
            data = snapshot.read(path)
            if data is None:
                continue
            if _alive(snapshot.file_pid(path)):
                merge.add(data, live=True)
            else:  # an exited process: its final counts are kept in memory, its file removed
                self._folded.add(data, live=False)
                path.unlink(missing_ok=True)
        merge.add_merge(self._folded)
        return merge


class _Collector:
    """The prometheus_client collector of the serving process."""

    def __init__(self, reader: DramatiqPrometheusMetricReader) -> None:
        self._reader = weakref.ref(reader)

    def collect(self) -> Iterable[Metric]:
        reader = self._reader()
        return reader.families() if reader is not None else []
