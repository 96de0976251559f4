"""Serving: the HTTP endpoint of the first process, and how the other processes find it.

* The first process that builds the reader binds the endpoint (:meth:`Endpoint.start`), makes the
  snapshot directory and announces both in its environment (:data:`SERVER_ENV`), so the processes
  it starts inherit the announcement.
* A forked child inherits the reader itself: :meth:`Endpoint.leave_in_child` closes its copy of the
  listening socket (the parent serves). A spawned child (or the forkserver) builds a new reader, and
  :func:`inherited_server` finds the announcement of a live serving process in its environment.
* :class:`Identity` names this process and its snapshot file; it is renewed after each fork.

Nothing here raises into the caller: a port already taken is logged and :meth:`Endpoint.start`
returns ``None``; a directory that cannot be made leaves the endpoint serving its own process only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric

from . import snapshot

_logger = logging.getLogger(__name__)

#: ``<pid>:<directory>`` of the serving process, set by it for the processes it starts.
SERVER_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_SERVER"
DIRECTORY_ENV = "OTEL_PYTHON_DRAMATIQ_PROMETHEUS_DIR"


@dataclass(frozen=True)
class Identity:
    """This process (``pid``) and the name of its snapshot file, ``<pid>-<start>.json``."""

    pid: int
    file: str

    @classmethod
    def of_this_process(cls) -> Identity:
        pid = os.getpid()
        return cls(pid, f"{pid}-{time.time_ns()}.json")


def inherited_server() -> Path | None:
    """The directory of a live serving process announced in this process's environment."""
    announced = os.environ.get(SERVER_ENV, "")
    pid, _, directory = announced.partition(":")
    if pid.isdigit() and directory and int(pid) != os.getpid() and snapshot.alive(int(pid)):
        return Path(directory)
    return None


class Endpoint:
    """The HTTP server of the serving process and the snapshot directory it announced.

    ``directory`` is ``None`` when no directory could be made: the endpoint then serves this
    process's metrics only.
    """

    def __init__(self, server: Any, directory: Path | None, *, owns_directory: bool) -> None:
        self.directory = directory
        self._server = server
        self._owns_directory = owns_directory

    @classmethod
    def start(
        cls,
        host: str,
        port: int,
        directory: str | os.PathLike[str] | None,
        families: Callable[[], list[Metric]],
        *,
        identity: Identity,
    ) -> Endpoint | None:
        """Serve ``families()`` on ``host:port`` and announce the snapshot directory; ``None`` (logged)
        when the port cannot be bound. ``families`` is held weakly: a bound method of the reader."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(families))  # type: ignore[arg-type]
        try:
            server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            _logger.error(
                "dramatiq_prometheus: cannot serve metrics on %s:%s (%s); this process keeps running "
                "and tracing, but its metrics are not exported. Another process holds the port: give "
                "this command another OTEL_EXPORTER_PROMETHEUS_PORT.",
                host,
                port,
                exc.strerror or exc,
            )
            return None
        owns = not (directory or os.environ.get(DIRECTORY_ENV))
        try:
            made: Path | None = _make_directory(directory)
        except OSError as exc:
            _logger.error(
                "dramatiq_prometheus: cannot use a snapshot directory (%s); serving this process only", exc
            )
            made = None
        if made is not None:
            os.environ[SERVER_ENV] = f"{identity.pid}:{made}"
        return cls(server, made, owns_directory=owns)

    def close(self, identity: Identity) -> None:
        """Stop serving, withdraw the announcement and remove the directory if this endpoint made it."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if os.environ.get(SERVER_ENV, "").startswith(f"{identity.pid}:"):
            del os.environ[SERVER_ENV]
        if self.directory is not None and self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def leave_in_child(self) -> None:
        """In a forked child: close this copy of the listening socket; the parent serves."""
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.socket.close()
            self._server = None


def _make_directory(directory: str | os.PathLike[str] | None) -> Path:
    configured = directory or os.environ.get(DIRECTORY_ENV)
    if not configured:
        return Path(tempfile.mkdtemp(prefix="otel-dramatiq-prometheus-"))
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    for stale in snapshot.files(path):  # an earlier run's counts: a new start starts from zero
        stale.unlink(missing_ok=True)
    return path


class _Collector:
    """The prometheus_client collector of the serving process."""

    def __init__(self, families: Callable[[], list[Metric]]) -> None:
        self._families = weakref.WeakMethod(families)

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        return families() if families is not None else []
