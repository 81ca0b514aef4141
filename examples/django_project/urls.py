from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("docket/", include("docket_django.urls")),  # docket/health/
    path("orders/", views.place_order),
    path("orders/<int:order_id>/", views.order_status),
]
# The admin's CSS and JS under STATIC_URL when DEBUG is on (nothing when it is off:
# then collectstatic and the web server serve them).
urlpatterns += staticfiles_urlpatterns()
