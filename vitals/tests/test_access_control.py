"""Access control: the roles (Django groups with model permissions, core/permissions.py), what
each role may do in the API, /metrics, throttling, CSRF on session writes, and the commands
that hand out roles. The walk over every URL is icu/tests/test_url_access.py; the audit trail
vitals/tests/test_audit.py."""

import importlib
import json
import logging

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from core import permissions
from core.management.commands.run_dev import DEMO_PASSWORD, demo_user_ensure
from core.permissions import ROLES, ROUTES, role_groups_ensure
from icu.tests.test_settings import run_settings
from icu.tests.test_url_access import walk
from patients.models import Patient
from patients.tests.factories import PatientFactory
from testing.clients import token_client
from vitals.models import Alarm, AlarmLimits
from vitals.tests.factories import AlarmFactory, PatientMetricFactory
from vitals.tests.test_alarm_api import DEFAULTS

pytestmark = pytest.mark.django_db


def codenames(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}


# --- the roles -------------------------------------------------------------------------------
def test_the_roles_migrations_create_the_groups_icu_permissions_describes():
    """The migrations keep their own copy of the roles (as migrations must): vitals/0004 the
    first roles, exports/0002 what exporting added. Run in turn against the migration state on
    an empty slate, they give each group exactly the permissions of ROLES."""
    migration = importlib.import_module("vitals.migrations.0004_roles")
    exports_migration = importlib.import_module("exports.migrations.0002_clinician_exports")
    assert {
        role: (*names, *exports_migration.ADDED.get(role, ()))
        for role, names in migration.ROLES.items()
    } == ROLES

    Group.objects.all().delete()

    class Editor:  # all the migrations use of their schema editor
        pass

    Editor.connection = connection
    loader = MigrationLoader(connection)
    # The state each migration runs in: its dependencies applied, itself not yet.
    state = loader.project_state(("vitals", "0004_roles"), at_end=False)
    migration.roles_create(state.apps, Editor())
    state = loader.project_state(("exports", "0002_clinician_exports"), at_end=False)
    exports_migration.permissions_grant(state.apps, Editor())

    groups = {group.name: codenames(group) for group in Group.objects.all()}
    assert groups == {role: set(names) for role, names in ROLES.items()}
    assert groups["clinician"] - groups["viewer"] == {
        "vitals.acknowledge_alarm",
        "vitals.change_alarmlimits",
        "exports.add_export",
        "exports.view_export",
    }


def test_role_groups_ensure_adds_what_is_missing_and_keeps_what_an_admin_added():
    viewer = role_groups_ensure()["viewer"]
    extra = Permission.objects.get(codename="view_auditevent")
    viewer.permissions.add(extra)
    viewer.permissions.remove(Permission.objects.get(codename="view_alarm"))

    role_groups_ensure()

    assert codenames(viewer) == {*ROLES["viewer"], "vitals.view_auditevent"}
    assert Group.objects.filter(name__in=list(ROLES)).count() == 2


def test_every_api_route_has_an_access_rule_and_every_rule_a_route():
    # The DRF views: /fhir/metadata (open, what the server does) and the catch-all 404s are not.
    api_routes = {
        r.key for r in walk() if r.namespace in ("api", "fhir") and r.drf_methods() is not None
    }
    # The token endpoint is a login (open to anonymous users, throttled): no rule.
    assert api_routes - {"api:token"} == set(ROUTES)


# --- what each role may do in the API --------------------------------------------------------
@pytest.fixture
def ward() -> dict:
    patient = PatientFactory(name="ann")
    PatientMetricFactory(patient=patient)
    return {"patient": patient, "alarm": AlarmFactory(patient=patient)}


READS = [
    "/api/",
    "/api/patients/",
    "/api/patients/{uuid}/",
    "/api/patients/{uuid}/metrics/",
    "/api/patients/{uuid}/trend/",
    "/api/patients/{uuid}/alarm-limits/",
    "/api/patients",
    "/api/patient/{uuid}/metrics",
    "/api/alarms/",
    "/api/alarms/{alarm}/",
    "/api/schema/",
    "/api/docs/",
]
WRITES = [
    ("post", "/api/alarms/{alarm}/acknowledge/", None),
    ("patch", "/api/patients/{uuid}/alarm-limits/", {"pulse_high": 140}),
    ("put", "/api/patients/{uuid}/alarm-limits/", {"spo2_low": 88, "pulse_low": 40}),
    ("post", "/api/patients/{uuid}/confirm-name/", None),
    ("post", "/api/patients/{uuid}/rename/", {"name": "Ann Smith"}),
]


@pytest.fixture
def clients(django_user_model, roles, api_client, viewer_client, staff_client) -> dict:
    """One client per kind of user."""
    nobody = django_user_model.objects.create_user("no-role", password="x" * 16)
    desk = django_user_model.objects.create_user("desk", password="x" * 16, is_staff=True)
    auditor = django_user_model.objects.create_user("auditor", password="x" * 16, is_staff=True)
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    return {
        "no role": token_client(nobody),
        "viewer": viewer_client,
        "clinician": api_client,
        "staff superuser": staff_client,
        "staff without a role": token_client(desk),
        "staff with view_auditevent": token_client(auditor),
    }


def request(client: APIClient, method: str, path: str, ward: dict, data=None):
    url = path.format(uuid=ward["patient"].uuid, alarm=ward["alarm"].pk)
    if method == "put":
        data = {**DEFAULTS, **data}
    return getattr(client, method)(url, data, format="json")


# (reads, writes, audit trail) per kind of user: 200 or 403.
MATRIX = {
    "no role": (403, 403, 403),
    "viewer": (200, 403, 403),
    "clinician": (200, 200, 403),
    "staff superuser": (200, 200, 200),
    "staff without a role": (403, 403, 403),
    "staff with view_auditevent": (403, 403, 200),
}


@pytest.mark.parametrize("who", MATRIX)
def test_what_each_kind_of_user_may_do(clients, ward, who):
    reads, writes, audit = MATRIX[who]
    client = clients[who]
    for path in READS:
        response = request(client, "get", path, ward)
        assert response.status_code == reads, (who, path, response.content[:300])
    for method, path, data in WRITES:
        response = request(client, method, path, ward, data)
        assert response.status_code == writes, (who, method, path, response.content[:300])
        if writes == 403:
            assert response.json()["error"]["code"] == "permission_denied"
    assert client.get("/api/audit/").status_code == audit

    alarm = Alarm.objects.get(pk=ward["alarm"].pk)
    assert alarm.state == ("acknowledged" if writes == 200 else "active")
    assert AlarmLimits.objects.exists() is (writes == 200)
    assert Patient.objects.get().name == ("Ann Smith" if writes == 200 else "ann")


def test_a_user_without_a_role_is_told_what_is_missing(clients, ward):
    response = clients["no role"].get("/api/patients/")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "status": 403,
            "code": "permission_denied",
            "message": "Your role does not allow this; it takes the permissions "
            "patients.view_patient, vitals.view_patientmetric, vitals.view_alarm.",
        }
    }
    response = clients["viewer"].post(f"/api/alarms/{ward['alarm'].pk}/acknowledge/")
    assert response.json()["error"]["message"] == (
        "Your role does not allow this; it takes the permissions "
        "vitals.view_alarm, patients.view_patient, vitals.acknowledge_alarm."
    )


def test_a_permission_given_in_the_admin_counts_at_once(viewer, viewer_client, ward):
    """Roles are plain Django permissions: give the viewer `acknowledge_alarm` alone, and it
    may acknowledge (no code, no restart)."""
    url = f"/api/alarms/{ward['alarm'].pk}/acknowledge/"
    assert viewer_client.post(url).status_code == 403
    viewer.user_permissions.add(Permission.objects.get(codename="acknowledge_alarm"))
    assert viewer_client.post(url).status_code == 200


def test_a_route_without_a_rule_is_refused_even_to_superusers(monkeypatch, staff_client, caplog):
    monkeypatch.delitem(permissions.ROUTES, "api:alarm-list")
    with caplog.at_level(logging.ERROR, logger="core.permissions"):
        response = staff_client.get("/api/alarms/")
    assert response.status_code == 403
    assert [r.route for r in caplog.records] == ["api:alarm-list"]
    assert staff_client.get("/api/patients/").status_code == 200


def test_an_inactive_users_token_opens_nothing(viewer, viewer_client):
    viewer.is_active = False
    viewer.save()
    assert viewer_client.get("/api/patients/").status_code == 401


# --- /metrics --------------------------------------------------------------------------------
SCRAPE_TOKEN = "a-long-random-scrape-token"


@pytest.mark.parametrize(
    ("configured", "authorization", "status", "code"),
    [
        (SCRAPE_TOKEN, None, 401, "not_authenticated"),
        (SCRAPE_TOKEN, f"Bearer {SCRAPE_TOKEN}", 200, None),
        (SCRAPE_TOKEN, f"bearer  {SCRAPE_TOKEN} ", 200, None),
        (SCRAPE_TOKEN, f"Bearer {SCRAPE_TOKEN}x", 401, "authentication_failed"),
        (SCRAPE_TOKEN, "Bearer é", 401, "authentication_failed"),  # not ASCII: no crash
        (SCRAPE_TOKEN, "Token not-a-token", 401, "authentication_failed"),
        ("", "Bearer ", 401, "authentication_failed"),  # no token set: no bearer access
        ("", None, 401, "not_authenticated"),
    ],
)
def test_metrics_takes_the_scrapers_bearer_token(settings, configured, authorization, status, code):
    settings.METRICS_TOKEN = configured
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = Client().get("/metrics", **headers)

    assert response.status_code == status
    if code:
        assert response.json()["error"]["code"] == code
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    else:
        assert response["Content-Type"].startswith("text/plain")
        assert "icu_http_requests_total" in response.content.decode()


def test_metrics_are_for_staff_users_by_token_or_session(
    settings, staff_user, staff_client, viewer, viewer_client
):
    settings.METRICS_TOKEN = ""
    assert staff_client.get("/metrics").status_code == 200
    denied = viewer_client.get("/metrics")
    assert denied.status_code == 403
    assert denied.json() == {
        "error": {
            "status": 403,
            "code": "permission_denied",
            "message": "Only staff may read the metrics.",
        }
    }
    session = Client()
    session.force_login(viewer)
    assert session.get("/metrics").status_code == 403
    session.force_login(staff_user)
    assert session.get("/metrics").status_code == 200


# --- throttling ------------------------------------------------------------------------------
@pytest.fixture
def low_rates(monkeypatch):
    """Rates a test can reach, and a clock that stands still. DRF reads the rates once, when
    rest_framework.throttling is imported: patched there, not in the settings."""
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/min", "user": "3/min"})
    monkeypatch.setattr(SimpleRateThrottle, "timer", lambda self: 1_000_000.0)
    cache.clear()
    yield
    cache.clear()


THROTTLED = {
    "error": {
        "status": 429,
        "code": "throttled",
        "message": "Request was throttled. Expected available in 60 seconds.",
    }
}


def test_users_are_throttled_per_user_with_429_and_retry_after(
    low_rates, viewer_client, api_client
):
    for _ in range(3):
        assert viewer_client.get("/api/patients/").status_code == 200

    response = viewer_client.get("/api/alarms/")

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert response["Content-Type"] == "application/json"
    assert response.json() == THROTTLED
    assert api_client.get("/api/patients/").status_code == 200  # another user: own count


def test_the_token_endpoint_is_throttled_per_address(low_rates, user):
    anon = APIClient()
    wrong = {"username": "nurse", "password": "guess"}
    assert [anon.post("/api/auth/token/", wrong).status_code for _ in range(2)] == [400, 400]

    response = anon.post("/api/auth/token/", {"username": "nurse", "password": "correct-horse-9"})

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert response.json() == THROTTLED
    other = APIClient(REMOTE_ADDR="10.0.0.7")
    ok = other.post("/api/auth/token/", {"username": "nurse", "password": "correct-horse-9"})
    assert ok.status_code == 200


def test_a_forged_x_forwarded_for_does_not_lift_the_token_endpoints_throttle(low_rates, user):
    """No proxy is trusted by default (TRUSTED_PROXIES=0): the header is ignored, the peer's
    address counts, however the header changes from one request to the next."""
    anon = APIClient()
    wrong = {"username": "nurse", "password": "guess"}
    statuses = [
        anon.post("/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code
        for n in range(2)
    ]
    assert statuses == [400, 400]

    response = anon.post(
        "/api/auth/token/",
        {"username": "nurse", "password": "correct-horse-9"},
        HTTP_X_FORWARDED_FOR="203.0.113.99",
    )

    assert response.status_code == 429
    assert response.json() == THROTTLED


def test_behind_one_trusted_proxy_the_address_it_added_counts(low_rates, settings, user):
    """TRUSTED_PROXIES=1: the rightmost X-Forwarded-For entry (added by our proxy) is the
    client; what the client wrote before it changes nothing."""
    settings.TRUSTED_PROXIES = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    anon = APIClient()
    wrong = {"username": "nurse", "password": "guess"}
    statuses = [
        anon.post(
            "/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 198.51.100.7"
        ).status_code
        for n in range(3)
    ]
    assert statuses == [400, 400, 429]
    # Another client behind the same proxy: its own count.
    other = anon.post(
        "/api/auth/token/",
        {"username": "nurse", "password": "correct-horse-9"},
        HTTP_X_FORWARDED_FOR="203.0.113.1, 198.51.100.8",
    )
    assert other.status_code == 200


PRINT_RATES = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "rates": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "classes": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "metrics_token": settings.METRICS_TOKEN,
}))
"""


def test_throttle_rates_metrics_token_and_cache_come_from_the_environment():
    defaults = run_settings(PRINT_RATES, DEBUG="true")
    assert defaults.returncode == 0, defaults.stderr
    assert json.loads(defaults.stdout) == {
        "rates": {"anon": "60/min", "user": "1200/min"},
        "classes": [
            "rest_framework.throttling.AnonRateThrottle",
            "rest_framework.throttling.UserRateThrottle",
        ],
        "cache": "django.core.cache.backends.locmem.LocMemCache",
        "metrics_token": "",
    }
    custom = run_settings(
        PRINT_RATES,
        DEBUG="true",
        THROTTLE_ANON="5/s",
        THROTTLE_USER="10000/hour",
        CACHE_URL="filecache:///tmp/icu-cache",
        METRICS_TOKEN="s3cret",
    )
    assert json.loads(custom.stdout) == {
        "rates": {"anon": "5/s", "user": "10000/hour"},
        "classes": [
            "rest_framework.throttling.AnonRateThrottle",
            "rest_framework.throttling.UserRateThrottle",
        ],
        "cache": "django.core.cache.backends.filebased.FileBasedCache",
        "metrics_token": "s3cret",
    }


def test_a_malformed_throttle_rate_stops_the_start():
    result = run_settings(PRINT_RATES, DEBUG="true", THROTTLE_USER="lots")
    assert result.returncode != 0
    assert (
        "THROTTLE_USER must be a rate like 60/min (per s, min, hour or day) (got 'lots')."
        in result.stderr
    )


# --- CSRF on session writes --------------------------------------------------------------------
def test_a_session_write_needs_the_csrf_token(user):
    alarm = AlarmFactory()
    url = f"/api/alarms/{alarm.pk}/acknowledge/"
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/api/auth/login/")  # any form page sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value

    refused = client.post(url)

    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "status": 403,
            "code": "permission_denied",
            "message": "CSRF Failed: CSRF token missing.",
        }
    }
    alarm.refresh_from_db()
    assert alarm.state == "active"

    accepted = client.post(url, HTTP_X_CSRFTOKEN=csrf)

    assert accepted.status_code == 200
    assert accepted.json()["state"] == "acknowledged"


def test_a_token_client_needs_no_csrf_token(user):
    alarm = AlarmFactory()
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = client.post(f"/api/alarms/{alarm.pk}/acknowledge/")

    assert response.status_code == 200
    assert response.json()["state"] == "acknowledged"


# --- handing out roles -------------------------------------------------------------------------
def test_run_dev_creates_the_demo_superuser_and_a_user_of_each_role(django_user_model):
    token = demo_user_ensure()
    assert demo_user_ensure() == token  # again: the same users, nothing duplicated

    users = {u.username: u for u in django_user_model.objects.all()}
    assert set(users) == {"admin", "nurse", "observer"}
    assert (users["admin"].is_superuser, users["admin"].is_staff) == (True, True)
    for name, role in (("nurse", "clinician"), ("observer", "viewer")):
        assert [g.name for g in users[name].groups.all()] == [role]
        assert not users[name].is_staff
        assert users[name].check_password(DEMO_PASSWORD)
    assert users["nurse"].has_perm("vitals.acknowledge_alarm")
    assert not users["observer"].has_perm("vitals.acknowledge_alarm")
    assert users["observer"].has_perm("patients.view_patient")


def test_the_demo_nurse_works_at_the_central_station_and_in_the_api_not_in_the_admin():
    """The README's role table: clinicians act at the central station and in the API, whose
    reads of a patient are in the access log; the admin (whose reads are not) is for staff."""
    demo_user_ensure()
    credentials = {"username": "nurse", "password": DEMO_PASSWORD}

    admin = Client().post("/admin/login/?next=/admin/", credentials)
    assert admin.status_code == 200  # the form again, not the admin's index
    assert "Please enter the correct username and password for a staff account" in (
        admin.content.decode()
    )
    station = Client()
    assert station.post("/login/", credentials)["Location"] == "/"
    assert station.get("/").status_code == 200
    token = APIClient().post("/api/auth/token/", credentials).json()["token"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/alarms/").status_code == 200


def test_assign_role_gives_and_takes_a_role(django_user_model, capsys):
    django_user_model.objects.create_user("kim", password="x" * 16)

    call_command("assign_role", "kim", "viewer")
    call_command("assign_role", "kim", "clinician")
    assert capsys.readouterr().out.splitlines() == ["kim: viewer", "kim: clinician, viewer"]
    call_command("assign_role", "kim", "viewer", "--remove")
    assert capsys.readouterr().out.strip() == "kim: clinician"

    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("assign_role", "nobody", "viewer")
    with pytest.raises(CommandError, match="invalid choice: 'admin'"):
        call_command("assign_role", "kim", "admin")
