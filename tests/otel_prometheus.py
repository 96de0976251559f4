"""The OTel Prometheus exporter as the tests compare with it, across its versions.

From 0.64b0 it takes ``scope_info_enabled`` and ``registry`` and adds ``otel_scope_*`` labels by
default; before, it registers with prometheus_client's global registry and adds no scope labels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

#: Whether the installed exporter has scope labels (and the arguments that go with them).
SCOPE_LABELS = False
try:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    SCOPE_LABELS = "scope_info_enabled" in inspect.signature(PrometheusMetricReader).parameters
except ImportError:  # pragma: no cover - the test extra installs it
    pass


def otel_exporter(scope_info_enabled: bool = True) -> tuple[Any, Callable[[], str]]:
    """``(reader, render)``: the exporter's reader and a function rendering only its series."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    if SCOPE_LABELS:
        registry = CollectorRegistry()
        reader = PrometheusMetricReader(scope_info_enabled=scope_info_enabled, registry=registry)
        return reader, lambda: generate_latest(registry).decode()
    # Before 0.64b0 the exporter has no scope labels at all (scope_info_enabled is then moot): callers
    # assert on what both releases render, and on the scope labels only where SCOPE_LABELS.
    reader = PrometheusMetricReader()  # registered globally too; the provider's shutdown unregisters it
    own = CollectorRegistry(auto_describe=False)
    own.register(reader._collector)  # its series alone, without the global registry's process_* ones
    return reader, lambda: generate_latest(own).decode()
