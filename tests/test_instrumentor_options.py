"""The instrumentor's placement rules, its options, and how the package is found and installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

import opentelemetry_instrumentation_dramatiq_cfg as package
from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, OpenTelemetryMiddleware
from opentelemetry_instrumentation_dramatiq_cfg.config import Options
from opentelemetry_instrumentation_dramatiq_cfg.package import _instruments

DOTTED = "opentelemetry_instrumentation_dramatiq_cfg.middleware.OpenTelemetryMiddleware"


def ours(broker):
    return [m for m in broker.middleware if isinstance(m, OpenTelemetryMiddleware)]


def test_instrument_creates_no_broker(instrument):
    dramatiq.broker.global_broker = None
    instrument()
    assert dramatiq.broker.global_broker is None


def test_the_broker_already_set_gets_the_middleware_first(instrument):
    broker = StubBroker()
    dramatiq.set_broker(broker)
    assert ours(broker) == []
    instrument()
    assert isinstance(broker.middleware[0], OpenTelemetryMiddleware) and len(ours(broker)) == 1


def test_instrumenting_twice_adds_one_middleware(instrument):
    instrument()
    instrument()
    broker = StubBroker()
    dramatiq.set_broker(broker)
    assert len(ours(broker)) == 1


def test_a_middleware_listed_by_dotted_path_is_reused_moved_first_and_configured(instrument, tracer_provider):
    from django_dramatiq.utils import load_middleware

    listed = load_middleware(DOTTED)
    broker = StubBroker(middleware=[Retries(), listed])
    assert broker.middleware[1] is listed
    instrument(excluded_actors=["x"])
    dramatiq.set_broker(broker)
    assert broker.middleware[0] is listed and len(ours(broker)) == 1
    assert listed.options.excluded_actors == frozenset({"x"})
    created_after = StubBroker(middleware=[Retries(), load_middleware(DOTTED)])
    assert isinstance(created_after.middleware[0], OpenTelemetryMiddleware) and len(ours(created_after)) == 1


def test_options_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_EXCLUDED_ACTORS", " a, b ,,")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_EXCLUDED_QUEUES", "q")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_USE_LINKS", "yes")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS", "1")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS_MAX_LENGTH", "64")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_METRICS_ENABLED", "off")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL", "2.5")
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS", "logging.warning")
    options = Options.resolve()
    assert options.excluded_actors == frozenset({"a", "b"}) and options.excluded_queues == frozenset({"q"})
    assert (options.use_links, options.capture_args, options.capture_args_max_length) == (True, True, 64)
    assert (options.metrics_enabled, options.traces_enabled, options.queue_metrics_interval) == (
        False,
        True,
        2.5,
    )
    import logging

    assert options.failure_hooks == (logging.warning,)
    assert Options.resolve(use_links=False).use_links is False  # a keyword argument wins


def test_the_stall_timeout_comes_from_the_environment_and_defaults_to_ten_minutes(monkeypatch):
    assert Options.resolve().stall_timeout == 600
    monkeypatch.setenv("OTEL_PYTHON_DRAMATIQ_STALL_TIMEOUT", "90")
    assert Options.resolve().stall_timeout == 90
    assert Options.resolve(stall_timeout=30).stall_timeout == 30
    with pytest.raises(ValueError, match="stall_timeout must be a number of seconds >= 0"):
        Options.resolve(stall_timeout=-1)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_PYTHON_DRAMATIQ_USE_LINKS", "maybe", "OTEL_PYTHON_DRAMATIQ_USE_LINKS must be true or false"),
        ("OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS_MAX_LENGTH", "big", "must be an integer"),
        ("OTEL_PYTHON_DRAMATIQ_CAPTURE_ARGS_MAX_LENGTH", "0", "must be a positive integer"),
        ("OTEL_PYTHON_DRAMATIQ_QUEUE_METRICS_INTERVAL", "-1", "must be a number of seconds >= 0"),
        ("OTEL_PYTHON_DRAMATIQ_STALL_TIMEOUT", "soon", "must be a number of seconds"),
        ("OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS", "no_such_module.hook", "cannot import 'no_such_module.hook'"),
        ("OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS", "nodots", "dotted path"),
    ],
)
def test_bad_option_values_fail_with_a_clear_message(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        Options.resolve()


def test_bad_keyword_arguments_fail_before_anything_is_patched(instrument):
    with pytest.raises(ValueError, match="use_links must be True or False"):
        instrument(use_links="yes")
    assert not hasattr(dramatiq.Broker.__init__, "__wrapped__")


def test_the_entry_point_names_the_instrumentor():
    (entry_point,) = [
        ep for ep in metadata.entry_points(group="opentelemetry_instrumentor") if ep.name == "dramatiq"
    ]
    assert entry_point.load() is DramatiqInstrumentor
    assert DramatiqInstrumentor().instrumentation_dependencies() == _instruments
    assert (Path(package.__file__).parent / "py.typed").is_file()


SCRIPT = textwrap.dedent(
    """
    import dramatiq
    from dramatiq.brokers.stub import StubBroker
    print([type(m).__name__ for m in StubBroker().middleware][0])
    """
)


DEFAULT_FIRST = dramatiq.middleware.default_middleware[0].__name__  # AgeLimit; Prometheus on 1.x


@pytest.mark.parametrize(
    ("disabled", "first"),
    [("", "OpenTelemetryMiddleware"), ("dramatiq", DEFAULT_FIRST), ("redis,dramatiq", DEFAULT_FIRST)],
)
def test_opentelemetry_instrument_finds_it_unless_disabled(disabled, first):
    env = {
        "PATH": str(Path(sys.executable).parent),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == first
