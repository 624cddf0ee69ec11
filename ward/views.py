"""The central station: the ward and the patient pages. Thin: each renders a page whose data
the browser then polls from the API (ward/static/ward/js), with the user's own session, and
refreshes at once when the stream of changes (`events`, ward/events.py) says so."""

import logging
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.request import split_domain_port
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import is_same_domain
from django.views.decorators.http import require_safe

from access.models import PatientAccess
from access.services import patient_access_record
from core.permissions import route_permits
from patients.errors import PatientNotFound
from units.models import Admission
from vitals.alarms import LIMIT_RULES, REFUSED_KIND
from vitals.news2 import SUBSCORE_KEYS
from vitals.patient_selectors import patient_get
from vitals.signs import OBSERVATION_VALIDITY, SIGNS
from ward.events import (
    TooManyClients,
    TooManyForUser,
    change_watcher,
    stream_async,
    stream_sync,
)
from ward.selectors import stream_user_may_read

logger = logging.getLogger(__name__)

# What the pages call each kind of limit alarm when it is switched off ("ALARM OFF: SpO2 low").
ALARM_OFF_LABELS = {rule.kind: rule.label for rule in LIMIT_RULES}

# What each page reads through the API: a user whose role does not allow all of it gets a page
# saying so, instead of a page that fails on every poll.
# The units API (units/apis.py) by what the pages do with it.
UNIT_ROUTES = {
    "units": "api:unit-list",
    "unit": "api:unit-detail",
    "admit": "api:patient-admit",
    "transfer": "api:patient-transfer",
    "discharge": "api:patient-discharge",
}
# How often the pages ask whether alarms are processed (api:alarm-processing; one small query):
# with ALARM_PROCESSING_STOPPED_AFTER at 10 s, the banner shows within 15 s of the last sweep.
ALARM_PROCESSING_POLL_SECONDS = 5.0
# The placeholders the pages replace in a route's URL.
UNIT_PLACEHOLDER = "unit-code"
PATIENT_PLACEHOLDER = uuid.UUID(int=0)

WARD_READS = (UNIT_ROUTES["units"], UNIT_ROUTES["unit"])
PATIENT_READS = (
    "api:patient-detail",
    "api:patient-trend",
    "api:patient-alarm-limits",
    "api:alarm-list",
)


# The pages' presentation of the signs the registry (vitals/signs.py) describes: each sign's
# colour, as monitors show them (red and yellow are for alarms only), and the label of the cell
# the signs of one contract field share ("BP 118/76").
WIRE_LABELS = {"bp": {"short": "BP", "label": "Blood pressure"}}
# The alarms about a sign that are not its limits: its cell shows them too.
# Asystole is about the pulse; a sign the contract refused, about its own cell.
OTHER_SIGN_ALARMS = {"asystole": "pulse"} | {kind: field for field, kind in REFUSED_KIND.items()}
OBSERVATION_LABELS = {"consciousness": "Consciousness (ACVPU)", "on_oxygen": "Air or oxygen"}


def _valid_seconds(key: str, default: timedelta) -> float:
    """How long a sign or observation's value stays valid: settings.SIGN_VALIDITY, which the
    settings parse into {key: timedelta} (the registry's windows where the environment sets
    none)."""
    return settings.SIGN_VALIDITY.get(key, default).total_seconds()


def _signs() -> list[dict]:
    """The signs as the pages show them, in the registry's order: the tiles' cells, the header,
    the charts and their limit lines are all built from this list."""
    return [
        {
            "key": sign.key,
            "label": sign.label,
            "short": sign.short,
            "unit": sign.unit,
            "decimals": sign.decimals,
            "validSeconds": _valid_seconds(sign.key, sign.valid_for),
            "optional": sign.optional,
            "onTile": sign.on_tile,
            "charted": sign.charted,
            "limits": {("low" if limit.low else "high"): limit.kind for limit in sign.limits},
            # The contract field it shares with other signs (one cell: "BP 118/76"), if any.
            "wire": sign.wire,
            "color": sign.color,
        }
        for sign in SIGNS
    ]


def _signs_config() -> dict:
    labels = {sign.news2: sign.label for sign in SIGNS if sign.news2} | OBSERVATION_LABELS
    return {
        "signs": _signs(),
        "wireLabels": WIRE_LABELS,
        # consciousness and on_oxygen: how long each stays valid (the tile's ACVPU cell).
        "observationValidSeconds": {
            key: _valid_seconds(key, valid) for key, valid in OBSERVATION_VALIDITY.items()
        },
        # The cell an alarm is about, by kind: its limits', and the others'.
        "alarmSigns": {limit.kind: sign.wire_field for sign in SIGNS for limit in sign.limits}
        | OTHER_SIGN_ALARMS,
        # The NEWS2 parameters an incomplete score names as missing, in words.
        "news2Parameters": {key: labels[key] for key in SUBSCORE_KEYS},
    }


def _refused(request: HttpRequest, routes: tuple[str, ...]) -> HttpResponse | None:
    if all(route_permits(user=request.user, route=route) for route in routes):
        return None
    return render(request, "ward/no_access.html", status=403)


def _events_allowed(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The push process on another port of this host (WARD_EVENTS_PORT): the page may connect
    to it (its Content-Security-Policy's connect-src, as django-csp's @csp_update would)."""
    if settings.WARD_EVENTS_PORT:
        scheme = "https" if request.is_secure() else "http"
        host, _ = split_domain_port(request.get_host())
        response._csp_update = {"connect-src": [f"{scheme}://{host}:{settings.WARD_EVENTS_PORT}"]}
    return response


def _polling() -> dict:
    return {
        "pollSeconds": settings.WARD_POLL_SECONDS,
        # The stream of changes (events below), and how often the page polls while it is up.
        "eventsUrl": reverse("ward:events"),
        "eventsPort": settings.WARD_EVENTS_PORT,
        "pushPollSeconds": settings.WARD_PUSH_POLL_SECONDS,
        "staleSeconds": settings.WARD_STALE_SECONDS,
        "clockSkewSeconds": settings.ALARM_CLOCK_SKEW_WARN,
        "loginUrl": resolve_url(settings.LOGIN_URL),
        # Whether alarms are processed at all (a consumer running): the banner's own poll.
        "alarmProcessingUrl": reverse("api:alarm-processing"),
        "alarmProcessingPollSeconds": ALARM_PROCESSING_POLL_SECONDS,
        **_signs_config(),
    }


@login_required
@require_safe
def ward(request: HttpRequest) -> HttpResponse:
    """A unit's beds at a glance (`?unit=<code>`), the most acute first, and the monitors of
    patients admitted to no bed, for a clinician to admit."""
    if refused := _refused(request, WARD_READS):
        return refused
    patient_kwargs = {"patient_uuid": PATIENT_PLACEHOLDER}
    config = {
        **_polling(),
        "unitsUrl": reverse(UNIT_ROUTES["units"]),
        # A unit's beds: this URL with the placeholder code replaced.
        "unitUrl": reverse(UNIT_ROUTES["unit"], kwargs={"code": UNIT_PLACEHOLDER}),
        # The patient page of a uuid: this URL with the placeholder uuid replaced.
        "patientPageUrl": reverse("ward:patient", kwargs=patient_kwargs),
        "admitUrl": reverse(UNIT_ROUTES["admit"], kwargs=patient_kwargs),
        "canAdmit": route_permits(user=request.user, route=UNIT_ROUTES["admit"], method="POST"),
        "alarmOffLabels": ALARM_OFF_LABELS,
    }
    return _events_allowed(request, render(request, "ward/ward.html", {"config": config}))


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
        "eventsUrl": f"{reverse('ward:events')}?patient={found.uuid}",
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
        # The bed: a transfer to another free bed of the unit, or the discharge.
        "admission": _admission(found),
        "wardUrl": reverse("ward:ward"),
        "unitUrl": reverse(UNIT_ROUTES["unit"], kwargs={"code": UNIT_PLACEHOLDER}),
        "transferUrl": reverse(UNIT_ROUTES["transfer"], kwargs=kwargs),
        "dischargeUrl": reverse(UNIT_ROUTES["discharge"], kwargs=kwargs),
        "canMove": route_permits(user=request.user, route=UNIT_ROUTES["transfer"], method="POST"),
    }
    page = render(request, "ward/patient.html", {"patient": found, "config": config})
    return _events_allowed(request, page)


def _origin_allowed(request: HttpRequest) -> bool:
    """A request without an Origin (a same-origin EventSource), or from the stream's own origin
    or one of CSRF_TRUSTED_ORIGINS, matched exactly as Django's CSRF check matches an Origin
    (CsrfViewMiddleware._origin_verified): scheme, host and port, the request's scheme as
    Django builds it (https behind a TLS-ending proxy with TRUST_X_FORWARDED_PROTO). The pages
    of the web server on another port of the host (WARD_EVENTS_PORT) are let in by its origin
    in CSRF_TRUSTED_ORIGINS. Any other (another application of the hospital's domain, or
    another port or scheme of this host: same-site, so the nurse's session cookie goes with
    it; "null") is refused before it takes a stream: the browser would hide the answer from
    that page, but the stream would hold one of WARD_PUSH_MAX_CLIENTS for STREAM_SECONDS, and
    a few of its tabs would send every station back to polling."""
    origin = request.headers.get("Origin")
    if not origin:
        return True
    try:
        own = f"{request.scheme}://{request.get_host()}"
    except DisallowedHost:
        own = None
    if origin == own:
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in [o for o in trusted if "*" not in o]:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    wildcards = [urlsplit(o) for o in trusted if "*" in o]  # https://*.example.org
    return any(
        is_same_domain(parsed.netloc, w.netloc.lstrip("*"))
        for w in wildcards
        if w.scheme == parsed.scheme
    )


def _cross_origin_allow(request: HttpRequest, response: HttpResponse) -> None:
    """The stream from the push process (WARD_EVENTS_PORT) is read by pages of the web server
    on another port: a page of an origin _origin_allowed lets in (checked first) may read it
    with its session's cookie (cookies are per host, not per port)."""
    origin = request.headers.get("Origin")
    if not origin:
        return
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Credentials"] = "true"
    patch_vary_headers(response, ["Origin"])


def _still_allowed(request: HttpRequest, routes: tuple[str, ...]):
    """The stream's check of its user's right (ward/events.py): the session it was opened
    with read afresh, then the connection closed (a stream holds none; kept inside a test's
    transaction)."""
    session_key, user_pk = request.session.session_key, request.user.pk

    def allowed() -> bool:
        try:
            return stream_user_may_read(session_key=session_key, user_pk=user_pk, routes=routes)
        except Exception:  # the database unreachable: end the stream (the page polls)
            logger.warning("ward stream: its user's right could not be checked", exc_info=True)
            return False
        finally:
            if not connection.in_atomic_block:
                connection.close()

    return allowed


def _admission(patient) -> dict | None:
    """The patient's open admission, as the patient page shows it; None if in no bed."""
    found = (
        Admission.objects.select_related("bed__unit")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )
    if found is None:
        return None
    bed = found.bed
    return {
        "bed": {"id": bed.pk, "label": bed.label, "unit": bed.unit.code},
        "unitName": bed.unit.name,
    }


@require_safe
def events(request: HttpRequest) -> HttpResponse:
    """The pages' stream of changes (ward/events.py), `?patient=<uuid>` for one patient's only:
    server-sent events under an ASGI server (the push process of production and `make run`) or
    a threaded WSGI one (`runserver` alone); 204 (the page polls, as EventSource stops on it)
    under a WSGI server whose workers a stream would hold, or with WARD_PUSH_MAX_CLIENTS=0.
    Readable by whoever may read what the page shows, from a page of its own origin or of
    CSRF_TRUSTED_ORIGINS (403 otherwise); 503 when the process has its maximum of streams, 429
    when the user has theirs (WARD_PUSH_MAX_CLIENTS_PER_USER). The stream ends when its user may
    no longer read it (checked every WARD_PUSH_RECHECK_SECONDS)."""
    patient = request.GET.get("patient")
    if patient is not None:
        try:
            patient = str(uuid.UUID(patient))
        except ValueError:
            return HttpResponse("patient: not a uuid\n", status=400, content_type="text/plain")
    if not request.user.is_authenticated or not _origin_allowed(request):
        return HttpResponse(status=403)
    routes = PATIENT_READS if patient else WARD_READS
    if not all(route_permits(user=request.user, route=route) for route in routes):
        return HttpResponse(status=403)
    asgi = isinstance(request, ASGIRequest)
    if settings.WARD_PUSH_MAX_CLIENTS == 0 or not (asgi or request.META.get("wsgi.multithread")):
        return HttpResponse(status=204)
    watcher = change_watcher()
    try:
        subscription = watcher.subscribe(patient=patient, user=request.user.pk)
    except TooManyClients:
        return HttpResponse(status=503, headers={"Retry-After": "30"})
    except TooManyForUser as refused:
        text = (
            f"this user has {refused.held} streams of changes open, the most one user may hold "
            "(WARD_PUSH_MAX_CLIENTS_PER_USER): this page polls instead\n"
        )
        return HttpResponse(
            text, status=429, content_type="text/plain", headers={"Retry-After": "30"}
        )
    stream = (stream_async if asgi else stream_sync)(
        watcher=watcher,
        subscription=subscription,
        allowed=_still_allowed(request, routes),
        recheck_seconds=settings.WARD_PUSH_RECHECK_SECONDS,
    )
    if not connection.in_atomic_block:
        connection.close()  # a stream holds no database connection
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy in front passes each event on at once
    _cross_origin_allow(request, response)
    # Also when the stream never started (the client gone before its first byte).
    response._resource_closers.append(lambda: watcher.unsubscribe(subscription))
    return response
