"""Every API route, mounted under settings.API_PREFIX by icu/urls.py."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from patients.apis import BriefPatientViewSet, PatientViewSet

app_name = "api"

router = DefaultRouter()
router.register("patients", PatientViewSet, basename="patient")

urlpatterns = [
    *router.urls,
    # The original brief's paths, with or without a trailing slash.
    re_path(r"^patients$", BriefPatientViewSet.as_view({"get": "list"}), name="brief-patient-list"),
    re_path(
        r"^patient/(?P<patient_uuid>[^/]+)/metrics/?$",
        BriefPatientViewSet.as_view({"get": "metrics"}),
        name="brief-patient-metrics",
    ),
    path("auth/token/", obtain_auth_token, name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
