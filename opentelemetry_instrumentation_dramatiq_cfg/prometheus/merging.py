"""Scrape-time merging: every process's snapshot, summed, as prometheus_client families.

On each scrape the serving process sums its own latest collection (kept in memory, never written),
the snapshot file of every live process and the final counts of the exited ones (see
:class:`.snapshot.Merge` for the arithmetic), then renders them (see :mod:`.exposition`). The file
of an exited process is folded into memory and removed, so the directory does not grow with worker
restarts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from . import exposition, snapshot


class ScrapeMerger:
    """The serving process's view of every process: its own snapshot, the exited ones' counts."""

    def __init__(self) -> None:
        #: the serving process's latest collection, merged from memory
        self.own: dict[str, Any] | None = None
        self._folded = snapshot.Merge()
        self._lock = threading.Lock()

    def after_fork_in_child(self, *, forget: bool) -> None:
        """A fresh lock (the parent's may have been held); with ``forget``, none of the parent's counts."""
        self._lock = threading.Lock()
        if forget:
            self._folded = snapshot.Merge()
            self.own = None

    def families(self, directory: Path | None, *, scope_info: bool, target_info: bool) -> list[Metric]:
        """The sum of this process's metrics and every snapshot in ``directory``, rendered."""
        with self._lock:
            merge = self._merge(directory)
        resource = self.own.get("resource", {}) if self.own is not None else {}
        return exposition.families(merge, resource, scope_info=scope_info, target_info=target_info)

    def _merge(self, directory: Path | None) -> snapshot.Merge:
        merge = snapshot.Merge()
        if self.own is not None:
            merge.add(self.own, live=True)
        for path in snapshot.files(directory) if directory is not None else ():
            data = snapshot.read(path)
            if data is None:
                continue
            if snapshot.alive(snapshot.file_pid(path)):
                merge.add(data, live=True)
            else:  # an exited process: its final counts are kept in memory, its file removed
                self._folded.add(data, live=False)
                path.unlink(missing_ok=True)
        merge.add_merge(self._folded)
        return merge
