"""Smoke test of the installed wheel, run by .ci/run with a venv holding only the wheel and its extras.

Run it from a directory outside the source tree: it fails if the package is imported from anywhere
but the venv's site-packages. Checks what a user of the published package relies on: the
`opentelemetry_instrumentor` entry point (found and run by `opentelemetry-instrument`), `py.typed`,
the Django app (system checks, migrations applied, health view and management commands answering),
the ``dramatiq-health`` console script.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import opentelemetry_instrumentation_dramatiq_cfg as package

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
HERE = Path(package.__file__).resolve().parent
DIST = "opentelemetry-instrumentation-dramatiq-cfg"


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise SystemExit(f"smoke test failed: {what} {detail}")
    print(f"ok: {what}")


check(HERE.parent == SITE, f"the package is imported from site-packages ({HERE})")
check((HERE / "py.typed").is_file(), "py.typed is installed")
check(
    importlib.metadata.version(DIST) == package.__version__,
    f"installed version {package.__version__} is version.py's",
)
script = Path(sys.executable).with_name("dramatiq-health")
refused = subprocess.run([str(script), "http://not-a-broker/"], capture_output=True, text=True, timeout=60)
check(
    script.is_file() and refused.returncode == 3 and "not a broker URL" in refused.stderr,
    "the dramatiq-health console script is installed and answers",
    (refused.returncode, refused.stderr),
)
licenses = [f for f in importlib.metadata.files(DIST) or [] if f.name == "LICENSE"]
check(any("Apache License" in f.read_text() for f in licenses), "the Apache-2.0 LICENSE is installed")

(entry_point,) = importlib.metadata.entry_points(group="opentelemetry_instrumentor", name="dramatiq")
check(entry_point.load() is package.DramatiqInstrumentor, "entry point dramatiq -> DramatiqInstrumentor")

# opentelemetry-instrument finds the entry point and instruments: the middleware is placed first in
# the broker set afterwards.
probe = """
import dramatiq
from dramatiq.brokers.stub import StubBroker
from opentelemetry_instrumentation_dramatiq_cfg import DramatiqInstrumentor, OpenTelemetryMiddleware
broker = StubBroker()
dramatiq.set_broker(broker)
assert DramatiqInstrumentor().is_instrumented_by_opentelemetry, "not instrumented"
assert isinstance(broker.middleware[0], OpenTelemetryMiddleware), broker.middleware
print("instrumented")
"""
bin_dir = Path(sys.executable).parent
result = subprocess.run(
    [str(bin_dir / "opentelemetry-instrument"), sys.executable, "-c", probe],
    env={
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    },
    capture_output=True,
    text=True,
    timeout=120,
)
check(
    result.returncode == 0 and result.stdout.strip().endswith("instrumented"),
    "opentelemetry-instrument loads the entry point and instruments",
    result.stdout[-500:] + result.stderr[-2000:],
)

# The Django app, from the wheel: settings, system checks, migrations, view, commands.
import django  # noqa: E402
import dramatiq  # noqa: E402
from django.conf import settings  # noqa: E402
from dramatiq.brokers.stub import StubBroker  # noqa: E402

settings.configure(
    SECRET_KEY="smoke",
    USE_TZ=True,
    ALLOWED_HOSTS=["testserver"],
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.admin",
        "django.contrib.messages",
        "django.contrib.sessions",
        "opentelemetry_instrumentation_dramatiq_cfg.django",
        "opentelemetry_instrumentation_dramatiq_cfg.django.records",
    ],
    ROOT_URLCONF="opentelemetry_instrumentation_dramatiq_cfg.django.urls",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                    "django.template.context_processors.request",
                ]
            },
        }
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    DRAMATIQ_HEALTH={"DETAILS": "public", "MIN_WORKERS": 0},
)
django.setup()
from django.core.management import call_command, get_commands  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.migrations.loader import MigrationLoader  # noqa: E402
from django.test import Client  # noqa: E402

import opentelemetry_instrumentation_dramatiq_cfg.django  # noqa: E402,F401

call_command("check", fail_level="WARNING")
print("ok: Django system checks pass")
migrations = MigrationLoader(connection).disk_migrations
check(("dramatiq_otel_records", "0001_initial") in migrations, "the records app's migrations are installed")
call_command("migrate", verbosity=0)
check(
    "dramatiq_otel_records_taskrecord" in connection.introspection.table_names(), "migrate creates the table"
)
call_command("makemigrations", "--check", "--dry-run", verbosity=0)
print("ok: the installed migrations match the models")
check({"dramatiq_health", "prune_task_records"} <= set(get_commands()), "management commands are found")

broker = StubBroker()
broker.declare_queue("default")
dramatiq.set_broker(broker)
response = Client().get("/")
body = json.loads(response.content)
check(
    response.status_code == 200 and body["status"] == "healthy" and body["broker"] == "stub",
    "the health view answers from the wheel",
    (response.status_code, body),
)
print("smoke test of the installed wheel passed")
