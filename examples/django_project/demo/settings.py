"""Settings of the example project: django_dramatiq on Redis, traced, with the health view.

Everything comes from environment variables so that the tests, docker-compose and a laptop run the
same code: REDIS_URL (default redis://127.0.0.1:6379/0), DRAMATIQ_NAMESPACE (default ``dramatiq``),
DATABASE_URL-free SQLite in ``DJANGO_DB_PATH`` (default ``db.sqlite3`` beside manage.py).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "demo.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ADMINS = [("Ops", "ops@example.com")]
EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_dramatiq",
    "opentelemetry_instrumentation_dramatiq_cfg.django",
    "shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}

# A cache shared by every process, so the admin alert is claimed once across all workers.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"),
    }
}

# django_dramatiq: the middleware by dotted path, first, as the guide lists its own.
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {
        "url": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "namespace": os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"),
    },
    "MIDDLEWARE": [
        "opentelemetry_instrumentation_dramatiq_cfg.middleware.OpenTelemetryMiddleware",
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.AdminMiddleware",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_TASKS_DATABASE = "default"

# Failure hooks and alerts are options of the middleware, here through its environment variables
# (set before the broker is built; docker-compose and the tests set the same ones).
os.environ.setdefault(
    "OTEL_PYTHON_DRAMATIQ_FAILURE_HOOKS",
    "shop.failures.handle_permanent_failure,"
    "opentelemetry_instrumentation_dramatiq_cfg.django.alerts.mail_admins_on_failure",
)

# The guide's LOGGING, with the trace and message of each record in its format.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "otel": {"()": "opentelemetry_instrumentation_dramatiq_cfg.logs.DramatiqLogFilter"},
    },
    "formatters": {
        "dramatiq": {
            "format": "[{asctime}] [{levelname}] [{name}] [trace_id={otelTraceID} span_id={otelSpanID} "
            "actor={dramatiq_actor} message_id={dramatiq_message_id}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {
            "level": "INFO",
            "class": "logging.StreamHandler",
            "formatter": "dramatiq",
            "filters": ["otel"],
        },
    },
    "loggers": {
        "dramatiq": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "shop": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "opentelemetry_instrumentation_dramatiq_cfg": {"handlers": ["console"], "level": "WARNING"},
    },
}
