from django.contrib import admin
from django.urls import include, path
from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("docket/", include("docket_django.urls")),  # docket/health/
    path("orders/", views.place_order),
    path("orders/<int:order_id>/", views.order_status),
]
