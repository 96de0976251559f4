from django.urls import include, path
from shop.views import enqueue

urlpatterns = [
    path("enqueue/", enqueue),
    path("health/", include("opentelemetry_instrumentation_dramatiq_cfg.django.urls")),
]
