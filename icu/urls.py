from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from icu import health

urlpatterns = [
    # First: with API_PREFIX "" the API's routes would otherwise be tried before them.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("fhir/", include("exports.fhir_urls")),
    path(settings.API_PREFIX, include("icu.api_router")),
    path(f"{settings.API_PREFIX}auth/", include("rest_framework.urls")),
    path("metrics", include("icu.metrics")),
    path("admin/", admin.site.urls),
    # The central station (ward view at `/`, patient pages, its login): after the API, whose
    # routes win should API_PREFIX be empty.
    path("", include("ward.urls")),
]

handler404 = "icu.exceptions.json_not_found"
handler500 = "icu.exceptions.json_server_error"
