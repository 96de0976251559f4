"""Django settings of the test suite (PostgreSQL on 127.0.0.1, database ``test``)."""

import hashlib
from pathlib import Path

SECRET_KEY = "tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "opentelemetry_instrumentation_dramatiq_cfg.django",
    "opentelemetry_instrumentation_dramatiq_cfg.django.records",
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
STATIC_URL = "/static/"
ROOT_URLCONF = "tests.django_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "NAME": "test",
        "USER": "postgres",
        # one test database per checkout, so suites run from two clones at once do not drop each other's
        "TEST": {
            "NAME": f"test_test_{hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]}"
        },
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ADMINS = [("Ops", "ops@example.com")]
DRAMATIQ_HEALTH: dict[str, object] = {}
