"""``path("docket/", include("docket_django.urls"))`` adds ``health/``."""

from django.urls import path

from . import views

app_name = "docket_django"
urlpatterns = [path("health/", views.health, name="health")]
