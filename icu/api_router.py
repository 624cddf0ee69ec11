"""Every API route, mounted under settings.API_PREFIX by icu/urls.py."""

from django.contrib.auth.signals import user_logged_in
from django.contrib.auth.views import redirect_to_login
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotAcceptable, NotAuthenticated, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.throttling import AnonRateThrottle

from access.apis import PatientAccessViewSet
from core.auth import login_locked_out_error
from exports.apis import ExportViewSet, PatientExportsView
from units.apis import (
    PatientAdmitView,
    PatientDischargeView,
    PatientTransferView,
    UnitDetailView,
    UnitListView,
)
from units.report_apis import UnitAlarmReportView
from vitals.apis import AlarmViewSet, AuditEventViewSet
from vitals.heartbeat_apis import AlarmProcessingView
from vitals.patient_apis import BriefPatientViewSet, PatientViewSet

app_name = "api"


class FirstFormatIfNoneAccepted(DefaultContentNegotiation):
    """A browser asking for `text/html` gets the schema (YAML) rather than a 406; a `?format=`
    the view lacks is still refused."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            if format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE):
                raise
            return renderers[0], renderers[0].media_type


class BrowserPagesMixin:
    """The schema and Swagger UI, opened from a browser: not logged in, the browser is sent to
    the login (LOGIN_URL) and back; other clients get the 401. Errors in the API's JSON shape
    rather than in the view's own format: the schema view would answer a 401 in YAML, the docs
    view with a bare "401 Unauthorized" text page."""

    content_negotiation_class = FirstFormatIfNoneAccepted

    def handle_exception(self, exc):
        if isinstance(exc, NotAuthenticated) and "text/html" in self.request.headers.get(
            "Accept", ""
        ):
            return redirect_to_login(self.request.get_full_path())
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class SchemaView(BrowserPagesMixin, SpectacularAPIView):
    pass


class DocsView(BrowserPagesMixin, SpectacularSwaggerSplitView):
    """Swagger UI under the Content-Security-Policy: its init script from `?script`, not inline;
    its inline style with the response's nonce (core/templates/core/swagger_ui.html)."""

    template_name = "core/swagger_ui.html"


class TokenView(ObtainAuthToken):
    """POST username and password, get the user's token. Open to anonymous users (it is a
    login), so throttled per client address (THROTTLE_ANON): DRF's own view is not. Too many
    failed logins for a user name or from an address: 429 `login_locked_out` for a while."""

    throttle_classes = [AnonRateThrottle]

    def post(self, request: Request, *args, **kwargs) -> Response:
        # A login door like the others: the serializer calls `authenticate(request=...)`, which
        # django-axes watches (and marks `axes_locked_out`); a success sends `user_logged_in`
        # (the login log, axes' reset of the failures, the user's last_login).
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if getattr(request, "axes_locked_out", False):
                raise login_locked_out_error()
            raise ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        user_logged_in.send(sender=type(user), request=request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


router = DefaultRouter()
router.register("patients", PatientViewSet, basename="patient")
router.register("alarms", AlarmViewSet, basename="alarm")
router.register("audit", AuditEventViewSet, basename="audit")
router.register("exports", ExportViewSet, basename="export")
router.register("access-log", PatientAccessViewSet, basename="access-log")

urlpatterns = [
    *router.urls,
    path("units/", UnitListView.as_view(), name="unit-list"),
    path("units/<slug:code>/", UnitDetailView.as_view(), name="unit-detail"),
    re_path(
        r"^patients/(?P<patient_uuid>[^/]+)/admit/$",
        PatientAdmitView.as_view(),
        name="patient-admit",
    ),
    re_path(
        r"^patients/(?P<patient_uuid>[^/]+)/transfer/$",
        PatientTransferView.as_view(),
        name="patient-transfer",
    ),
    re_path(
        r"^patients/(?P<patient_uuid>[^/]+)/discharge/$",
        PatientDischargeView.as_view(),
        name="patient-discharge",
    ),
    # The original brief's paths, with or without a trailing slash.
    re_path(r"^patients$", BriefPatientViewSet.as_view({"get": "list"}), name="brief-patient-list"),
    re_path(
        r"^patient/(?P<patient_uuid>[^/]+)/metrics/?$",
        # The router passes an @action's own serializer and pagination to its view; a path
        # written by hand must too. `schema` stays None: the brief paths are not documented.
        BriefPatientViewSet.as_view(
            {"get": "metrics"}, **{**BriefPatientViewSet.metrics.kwargs, "schema": None}
        ),
        name="brief-patient-metrics",
    ),
    re_path(
        r"^patients/(?P<patient_uuid>[^/]+)/exports/$",
        PatientExportsView.as_view(),
        name="patient-exports",
    ),
    path(
        "units/<slug:code>/alarm-report/",
        UnitAlarmReportView.as_view(),
        name="unit-alarm-report",
    ),
    path("alarm-processing/", AlarmProcessingView.as_view(), name="alarm-processing"),
    path("auth/token/", TokenView.as_view(), name="token"),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(url_name="api:schema"), name="docs"),
]
