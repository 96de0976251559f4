"""Per-process snapshots of cumulative metrics, and their sum over processes.

A snapshot is what one process's SDK collected, as plain JSON data: each metric with its scope,
description, unit, kind and points. Every process writes its own file (replaced atomically); the
serving process reads them all and merges them with :class:`Merge`:

* counters and histograms are summed over every process, the exited ones included, so the sum never
  goes backwards while the command runs (as prometheus_client's multiprocess mode does);
* up-down counters (messages in flight) are summed over live processes only;
* gauges take the newest reading among live processes: the queue gauges are read from the broker,
  which every process sees the same, so they must not be summed (two processes would report 8 for a
  queue of 4).

Histogram points keep, per bucket, the newest exemplar (trace and span id) seen in any process.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    Sum,
)

COUNTER = "counter"
UPDOWN = "updown"
GAUGE = "gauge"
HISTOGRAM = "histogram"

#: ``[value, time (s), trace id (hex), span id (hex)]`` of one exemplar.
Exemplar = list[Any]


def _kind(data: Any) -> str | None:
    if isinstance(data, Sum):
        cumulative = data.aggregation_temporality == AggregationTemporality.CUMULATIVE
        return UPDOWN if (not data.is_monotonic and cumulative) else COUNTER
    if isinstance(data, Gauge):
        return GAUGE
    if isinstance(data, Histogram):
        return HISTOGRAM
    return None  # exponential histograms: not rendered (the OTel Prometheus exporter skips them too)


def attributes_key(attributes: Mapping[str, Any]) -> str:
    return json.dumps(attributes, sort_keys=True, default=str)


class ExemplarMemory:
    """The newest exemplar per histogram bucket, kept across collections.

    The SDK hands each exemplar to one collection only; a scrape must still show it afterwards.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str, int], Exemplar] = {}

    def update(
        self, metric: str, scope: str, attributes: str, point: HistogramDataPoint
    ) -> dict[str, Exemplar]:
        bounds = point.explicit_bounds
        for exemplar in getattr(point, "exemplars", None) or ():
            if exemplar.trace_id is None or exemplar.span_id is None:
                continue
            bucket = bisect.bisect_left(bounds, exemplar.value)
            self._last[scope, metric, attributes, bucket] = [
                exemplar.value,
                exemplar.time_unix_nano / 1e9,
                format(exemplar.trace_id, "032x"),
                format(exemplar.span_id, "016x"),
            ]
        return {
            str(bucket): exemplar
            for bucket in range(len(bounds) + 1)
            if (exemplar := self._last.get((scope, metric, attributes, bucket))) is not None
        }


def snapshot(metrics_data: MetricsData, memory: ExemplarMemory, *, pid: int, time: float) -> dict[str, Any]:
    """The JSON-ready snapshot of one collection of this process."""
    resource: dict[str, Any] = {}
    metrics: list[dict[str, Any]] = []
    for resource_metrics in metrics_data.resource_metrics:
        resource.update(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            scope_data = {
                "name": scope.name or "",
                "version": scope.version or "",
                "schema_url": scope.schema_url or "",
                "attributes": dict(scope.attributes or {}),
            }
            scope_key = attributes_key(scope_data)
            for metric in scope_metrics.metrics:
                kind = _kind(metric.data)
                if kind is None:
                    continue
                points: list[dict[str, Any]] = []
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    key = attributes_key(attributes)  # computed here, once, not by every scrape
                    if isinstance(point, HistogramDataPoint):
                        points.append(
                            {
                                "key": key,
                                "attributes": attributes,
                                "bounds": list(point.explicit_bounds),
                                "counts": list(point.bucket_counts),
                                "sum": point.sum,
                                "exemplars": memory.update(metric.name, scope_key, key, point),
                            }
                        )
                    else:
                        value = getattr(point, "value", None)
                        if value is not None:
                            points.append({"key": key, "attributes": attributes, "value": value})
                metrics.append(
                    {
                        "scope": scope_data,
                        "name": metric.name,
                        "description": metric.description or "",
                        "unit": metric.unit or "",
                        "kind": kind,
                        "points": points,
                    }
                )
    return {"pid": pid, "time": time, "resource": resource, "metrics": metrics}


def write(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically: a reader sees the previous snapshot or this one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, separators=(",", ":"), default=str))
    os.replace(temporary, path)


def read(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # gone (its process folded or removed it) or not ours
    return data if isinstance(data, dict) and isinstance(data.get("metrics"), list) else None


@dataclass
class MergedMetric:
    scope: dict[str, Any]
    name: str
    description: str
    unit: str
    kind: str
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)  # gauges: when each point was read


class Merge:
    """Metrics summed over processes (see the module docs); metrics and points in first-seen order."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[str, str, str], MergedMetric] = {}

    def add(self, data: Mapping[str, Any], *, live: bool) -> None:
        """Add one process's snapshot; ``live``: whether that process is still running."""
        time = float(data.get("time", 0.0))
        for metric in data["metrics"]:
            kind = metric["kind"]
            if not live and kind in (UPDOWN, GAUGE):
                continue  # an exited process has nothing in flight and reads no broker any more
            merged = self._metric(
                MergedMetric(metric["scope"], metric["name"], metric["description"], metric["unit"], kind)
            )
            for point in metric["points"]:
                self._add_point(merged, point, time)

    def add_merge(self, other: Merge) -> None:
        """Add the counters and histograms of ``other`` (the folded sums of exited processes)."""
        for metric in other.metrics.values():
            merged = self._metric(metric)
            for point in metric.points.values():
                self._add_point(merged, point, 0.0)

    def _metric(self, metric: MergedMetric) -> MergedMetric:
        """This merge's metric of the same scope, name and kind as ``metric`` (an empty copy if new)."""
        key = (attributes_key(metric.scope), metric.name, metric.kind)
        merged = self.metrics.get(key)
        if merged is None:
            merged = self.metrics[key] = MergedMetric(
                metric.scope, metric.name, metric.description, metric.unit, metric.kind
            )
        return merged

    @staticmethod
    def _add_point(merged: MergedMetric, point: Mapping[str, Any], time: float) -> None:
        key = point.get("key") or attributes_key(point["attributes"])
        current = merged.points.get(key)
        if current is None:
            merged.points[key] = _copy(point)
            merged.times[key] = time
        elif merged.kind == GAUGE:
            if time >= merged.times[key]:
                merged.points[key], merged.times[key] = _copy(point), time
        elif merged.kind == HISTOGRAM:
            if current["bounds"] != point["bounds"] or len(current["counts"]) != len(point["counts"]):
                return  # boundaries changed (a View in one process only): keep the first
            current["counts"] = [a + b for a, b in zip(current["counts"], point["counts"], strict=True)]
            current["sum"] += point["sum"]
            exemplars = current["exemplars"]
            for bucket, exemplar in point.get("exemplars", {}).items():
                if bucket not in exemplars or exemplar[1] >= exemplars[bucket][1]:
                    exemplars[bucket] = exemplar
        else:
            current["value"] += point["value"]


def _copy(point: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(point)
    if "counts" in copied:
        copied["counts"] = list(copied["counts"])
        copied["exemplars"] = dict(copied.get("exemplars") or {})
    return copied


def files(directory: Path) -> Iterable[Path]:
    """The snapshot files in ``directory`` (named ``<pid>-<start>.json``)."""
    try:
        return sorted(directory.glob("[0-9]*-[0-9]*.json"))
    except OSError:
        return []


def file_pid(path: Path) -> int:
    return int(path.name.split("-", 1)[0])


def alive(pid: int) -> bool:
    """Whether process ``pid`` (a snapshot's writer, the serving process) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
