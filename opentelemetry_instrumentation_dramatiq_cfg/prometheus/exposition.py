"""Merged snapshots as prometheus_client metric families, named as the OTel Prometheus exporter names them.

The rules are those of the OpenTelemetry specification's Prometheus compatibility section, as
``opentelemetry-exporter-prometheus`` applies them: metric names and label keys sanitized, the unit
mapped to a suffix (``s`` → ``_seconds``, ``{message}`` dropped), monotonic sums as counters
(``_total``), cumulative up-down sums and gauges as gauges, explicit-bucket histograms as histograms,
label keys sorted with missing ones filled with ``""``, non-string label values JSON-encoded, the
scope as ``otel_scope_name``/``otel_scope_version``/``otel_scope_schema_url`` (and
``otel_scope_<attribute>``) labels unless turned off, and the resource as ``target_info``. A golden
test renders one workload through both and compares the bytes.

Histogram buckets carry their exemplar (``trace_id``, ``span_id``); prometheus_client writes them in
the OpenMetrics format only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar

from .snapshot import COUNTER, HISTOGRAM, Merge, MergedMetric

_SANITIZE_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_SANITIZE_LABEL = re.compile(r"[^a-zA-Z0-9]+")
_UNIT_ANNOTATION = re.compile(r"{.*}")
_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def metric_name(name: str) -> str:
    if name and name[0].isdigit():
        name = "_" + name[1:]
    return _SANITIZE_NAME.sub("_", name)


def label_name(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _SANITIZE_LABEL.sub("_", key)


def unit_suffix(unit: str) -> str:
    unit = _UNIT_ANNOTATION.sub("", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    parts = unit.split("/", maxsplit=1)
    if len(parts) == 2:
        bottom = _SANITIZE_NAME.sub("_", parts[1])
        if bottom:
            top = _SANITIZE_NAME.sub("_", parts[0])
            top = _UNITS.get(top, top)
            bottom = _PER_UNITS.get(bottom, bottom)
            return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _SANITIZE_NAME.sub("_", unit).strip("_")


def label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def families(
    merge: Merge, resource: Mapping[str, Any], *, scope_info: bool = True, target_info: bool = True
) -> list[Metric]:
    """The families of ``merge``, ``target_info`` (from ``resource``) first, in first-seen order."""
    found: dict[str, Metric] = {}
    if target_info and merge.metrics:
        attributes = {label_name(key): label_value(value) for key, value in resource.items()}
        info = InfoMetricFamily("target", "Target metadata", labels=list(attributes))
        info.add_metric(labels=list(attributes.keys()), value=attributes)
        found["target"] = info
    for metric in merge.metrics.values():
        _add(found, metric, scope_info)
    return list(found.values())


def _scope_labels(scope: Mapping[str, Any]) -> dict[str, Any]:
    labels = {"otel_scope_" + key: value for key, value in (scope.get("attributes") or {}).items()}
    labels["otel_scope_name"] = scope.get("name") or ""
    labels["otel_scope_version"] = scope.get("version") or ""
    labels["otel_scope_schema_url"] = scope.get("schema_url") or ""
    return labels


def _add(found: dict[str, Metric], metric: MergedMetric, scope_info: bool) -> None:
    name = metric_name(metric.name)
    unit = unit_suffix(metric.unit)
    scope = _scope_labels(metric.scope) if scope_info else {}
    keys: set[str] = set()
    rows: list[dict[str, str]] = []
    for point in metric.points.values():
        labels = {}
        for key, value in chain(scope.items(), point["attributes"].items()):
            label = label_name(key)
            keys.add(label)
            labels[label] = label_value(value)
        rows.append(labels)
    label_keys = sorted(keys)
    label_rows = [[labels.get(key, "") for key in label_keys] for labels in rows]
    factory: type[Metric] = (
        CounterMetricFamily
        if metric.kind == COUNTER
        else HistogramMetricFamily
        if metric.kind == HISTOGRAM
        else GaugeMetricFamily
    )
    family_id = "|".join((name, metric.description, unit, factory.__name__))
    family = found.get(family_id)
    if family is None:
        family = found[family_id] = factory(  # type: ignore[call-arg]
            name=name, documentation=metric.description, labels=label_keys, unit=unit
        )
    for label_values, point in zip(label_rows, metric.points.values(), strict=True):
        if metric.kind == HISTOGRAM:
            family.add_metric(  # type: ignore[attr-defined]
                labels=label_values, buckets=_buckets(point), sum_value=point["sum"]
            )
        else:
            family.add_metric(labels=label_values, value=point["value"])  # type: ignore[attr-defined]


def _buckets(point: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
    exemplars: Mapping[str, Any] = point.get("exemplars") or {}
    buckets: list[Sequence[Any]] = []
    total = 0
    bounds: Iterable[Any] = chain(point["bounds"], ["+Inf"])
    for index, (bound, count) in enumerate(zip(bounds, point["counts"], strict=False)):
        total += count
        exemplar = exemplars.get(str(index))
        if exemplar is None:
            buckets.append((f"{bound}", total))
        else:
            value, timestamp, trace_id, span_id = exemplar
            buckets.append(
                (f"{bound}", total, Exemplar({"trace_id": trace_id, "span_id": span_id}, value, timestamp))
            )
    return buckets
