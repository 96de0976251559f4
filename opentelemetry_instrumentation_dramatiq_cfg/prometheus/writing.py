"""Writing: how a process other than the serving one hands its metrics to the endpoint.

Every ``export_interval`` seconds a daemon thread collects the process's metrics, and the reader
writes them with :meth:`SnapshotWriter.write` to ``<pid>-<start>.json`` in the announced directory
(replaced atomically, see :func:`.snapshot.write`). After a fork the thread does not exist in the
child: :meth:`SnapshotWriter.after_fork_in_child` forgets it so the child starts its own. At worker
shutdown the reader collects once more, writing the final counts.

A file that cannot be written is logged once (then at debug level) and never raised: tasks run on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import snapshot

_logger = logging.getLogger(__name__)


class SnapshotWriter:
    """The periodic collections of one writing process, and the writes of their snapshots.

    ``collect`` is the reader's ``MetricReader.collect``: the SDK then calls the reader's
    ``_receive_metrics``, which writes the snapshot.
    """

    def __init__(self, collect: Callable[[], None], interval: float) -> None:
        self.interval = interval
        self._collect = collect
        self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Collect every ``interval`` seconds, on a daemon thread, until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._write_periodically, name="otel-dramatiq-prometheus", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def after_fork_in_child(self) -> None:
        """The parent's thread does not exist here: forget it (the caller starts this process's own)."""
        self._thread = None
        self._stop = threading.Event()

    def write(self, directory: Path, file: str, data: Mapping[str, Any]) -> None:
        """Write ``data`` to ``directory/file``; a failure is logged (once as a warning), not raised."""
        try:
            snapshot.write(directory / file, data)
        except OSError as exc:
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            _logger.log(
                level,
                "dramatiq_prometheus: cannot write this process's metrics to %s (%s); tasks are not affected",
                directory,
                exc,
            )

    def _write_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._collect()
            except Exception:
                _logger.debug("dramatiq_prometheus: collection failed", exc_info=True)
