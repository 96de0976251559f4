from django.urls import path

from . import views

app_name = "dramatiq_health"
urlpatterns = [path("", views.health, name="health")]
