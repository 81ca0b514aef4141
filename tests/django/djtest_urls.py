from django.contrib import admin
from django.urls import include, path
from djtestapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("docket/", include("docket_django.urls")),
    path("orders/", views.create_order),
]
