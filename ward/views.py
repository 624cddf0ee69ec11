"""The central station: the ward and the patient pages. Thin: each renders a page whose data
the browser then polls from the API (ward/static/ward/js), with the user's own session."""

import uuid

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.views.decorators.http import require_safe

from access.models import PatientAccess
from access.services import patient_access_record
from core.permissions import route_permits
from patients.errors import PatientNotFound
from vitals.alarms import LIMIT_RULES
from vitals.patient_selectors import patient_get

# What the pages call each kind of limit alarm when it is switched off ("ALARM OFF: SpO2 low").
ALARM_OFF_LABELS = {rule.kind: rule.label for rule in LIMIT_RULES}

# What each page reads through the API: a user whose role does not allow all of it gets a page
# saying so, instead of a page that fails on every poll.
WARD_READS = ("api:patient-list",)
PATIENT_READS = (
    "api:patient-detail",
    "api:patient-trend",
    "api:patient-alarm-limits",
    "api:alarm-list",
)


def _refused(request: HttpRequest, routes: tuple[str, ...]) -> HttpResponse | None:
    if all(route_permits(user=request.user, route=route) for route in routes):
        return None
    return render(request, "ward/no_access.html", status=403)


def _polling() -> dict:
    return {
        "pollSeconds": settings.WARD_POLL_SECONDS,
        "staleSeconds": settings.WARD_STALE_SECONDS,
        "clockSkewSeconds": settings.ALARM_CLOCK_SKEW_WARN,
        "loginUrl": resolve_url(settings.LOGIN_URL),
    }


@login_required
@require_safe
def ward(request: HttpRequest) -> HttpResponse:
    """Every bed at a glance, the most acute first."""
    if refused := _refused(request, WARD_READS):
        return refused
    config = {
        **_polling(),
        "patientsUrl": reverse("api:patient-list"),
        # The patient page of a uuid: this URL with the placeholder uuid replaced.
        "patientPageUrl": reverse("ward:patient", kwargs={"patient_uuid": uuid.UUID(int=0)}),
        "alarmOffLabels": ALARM_OFF_LABELS,
    }
    return render(request, "ward/ward.html", {"config": config})


@login_required
@require_safe
def patient(request: HttpRequest, patient_uuid: uuid.UUID) -> HttpResponse:
    """One patient: the latest reading, trends with the alarm limits, the alarms."""
    if refused := _refused(request, PATIENT_READS):
        return refused
    try:
        found = patient_get(patient_uuid=patient_uuid)
    except PatientNotFound:
        return render(request, "ward/not_found.html", {"patient_uuid": patient_uuid}, status=404)
    patient_access_record(user=request.user, patient=found, kind=PatientAccess.Kind.PAGE)
    kwargs = {"patient_uuid": found.uuid}
    config = {
        **_polling(),
        "patientUrl": reverse("api:patient-detail", kwargs=kwargs),
        "trendUrl": reverse("api:patient-trend", kwargs=kwargs),
        "limitsUrl": reverse("api:patient-alarm-limits", kwargs=kwargs),
        "alarmsUrl": f"{reverse('api:alarm-list')}?patient={found.uuid}&page_size=50",
        "canAcknowledge": route_permits(
            user=request.user, route="api:alarm-acknowledge", method="POST"
        ),
        "monitoringEndUrl": reverse("api:patient-monitoring-end", kwargs=kwargs),
        "canEndMonitoring": route_permits(
            user=request.user, route="api:patient-monitoring-end", method="POST"
        ),
        # The identity warning's buttons: confirm the name, or rename to the one sent.
        "confirmNameUrl": reverse("api:patient-confirm-name", kwargs=kwargs),
        "renameUrl": reverse("api:patient-rename", kwargs=kwargs),
        "canResolveName": route_permits(
            user=request.user, route="api:patient-rename", method="POST"
        ),
        "alarmsOffUrl": reverse("api:patient-alarms-off", kwargs=kwargs),
        "alarmOffLabels": ALARM_OFF_LABELS,
        "canSwitchAlarmsOff": route_permits(
            user=request.user, route="api:patient-alarms-off", method="POST"
        ),
    }
    return render(request, "ward/patient.html", {"patient": found, "config": config})
