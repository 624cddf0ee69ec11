import re

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from core import exceptions, health

urlpatterns = [
    # First: with API_PREFIX "" the API's routes would otherwise be tried before them.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("fhir/", include("exports.fhir_urls")),
    path(settings.API_PREFIX, include("icu.api_router")),
    path(f"{settings.API_PREFIX}auth/", include("rest_framework.urls")),
    # Every other path under the prefix: the API's 404, with DEBUG too. (An empty prefix would
    # make it everything's: there handler404 answers in the same shape, with DEBUG off.)
    *(
        [
            re_path(
                rf"^{re.escape(settings.API_PREFIX)}(?P<url>.*)$",
                exceptions.unknown_api_path,
                name="api-unknown",
            )
        ]
        if settings.API_PREFIX
        else []
    ),
    path("metrics", include("core.metrics")),
    path("admin/", admin.site.urls),
    # The central station (ward view at `/`, patient pages, its login): after the API, whose
    # routes win should API_PREFIX be empty.
    path("", include("ward.urls")),
]

handler404 = "core.exceptions.json_not_found"
handler500 = "core.exceptions.json_server_error"
