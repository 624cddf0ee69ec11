"""The central station's pages, mounted at the root by icu/urls.py (after the API: with an
empty API_PREFIX, the API's root and patient routes would take `/` and `patients/<uuid>/`)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from ward import report_views, views

app_name = "ward"

urlpatterns = [
    path("", views.ward, name="ward"),
    path("patients/<uuid:patient_uuid>/", views.patient, name="patient"),
    path("events/", views.events, name="events"),
    path("units/<slug:code>/report/", report_views.unit_report, name="unit-report"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="ward/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="ward:login"), name="logout"),
]
