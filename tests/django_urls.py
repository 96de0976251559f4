from django.apps import apps
from django.urls import include, path

urlpatterns = [path("health/", include("opentelemetry_instrumentation_dramatiq_cfg.django.urls"))]

if apps.is_installed("django.contrib.admin"):  # bench/health_view.py runs without it
    from django.contrib import admin

    urlpatterns.append(path("admin/", admin.site.urls))
