from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("health/", include("opentelemetry_instrumentation_dramatiq_cfg.django.urls")),
    path("admin/", admin.site.urls),
]
