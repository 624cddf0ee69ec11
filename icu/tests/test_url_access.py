"""Every URL of the project, walked from the URLconf itself: nobody anonymous gets in (but the
health checks and the logins), and a viewer changes nothing anywhere.

The walk goes through every include, the admin's included, fills each pattern's parameters
with plausible values (an existing patient, an active alarm...) and checks that the URL built
resolves back to that very pattern. Each pattern must be classified below; a new one that is
not fails the walk (`test_every_url_pattern_is_classified`) instead of being skipped.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils.regex_helper import normalize
from rest_framework.test import APIClient

from exports.tests.factories import ExportFactory
from patients.models import Patient
from patients.tests.factories import PatientFactory
from units.models import Unit
from vitals.models import Alarm
from vitals.services import alarm_limits_update, alarm_switch_off
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

# Who may reach which URL is decided by the URLconf and the route table, not by the engine.
pytestmark = [pytest.mark.django_db, pytest.mark.engine_neutral]

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
NOT_AUTHENTICATED = {
    "error": {
        "status": 401,
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
    }
}

# --- the classification: every pattern of the URLconf is in exactly one ----------------------
HEALTH = {"healthz", "readyz"}  # anonymous probes: 200 or 503
METRICS = {"metrics"}  # staff or the scraper's bearer token (core/metrics.py)
API = {  # DRF views, core/permissions.py
    "api:api-root",
    "api:patient-list",
    "api:patient-detail",
    "api:patient-metrics",
    "api:patient-trend",
    "api:patient-alarm-limits",
    "api:patient-monitoring-end",
    "api:patient-confirm-name",
    "api:patient-rename",
    "api:patient-admit",
    "api:patient-transfer",
    "api:patient-discharge",
    "api:unit-list",
    "api:unit-detail",
    "api:patient-alarms-off",
    "api:patient-alarm-off",
    "api:brief-patient-list",
    "api:brief-patient-metrics",
    "api:alarm-list",
    "api:alarm-detail",
    "api:alarm-acknowledge",
    "api:alarm-processing",
    "api:audit-list",
    "api:access-log-list",
    "api:patient-exports",
    "api:export-list",
    "api:export-detail",
    "api:export-result",
    "api:schema",
    "api:docs",
    "fhir:observation-search",  # a DRF view outside API_PREFIX, at /fhir/Observation
    "api:unit-alarm-report",
}
# The writes of the API: a viewer gets 403 for these, 405 for every other method.
API_WRITES = {
    ("api:alarm-acknowledge", "POST"),
    ("api:patient-alarm-limits", "PUT"),
    ("api:patient-alarm-limits", "PATCH"),
    ("api:patient-monitoring-end", "POST"),
    ("api:patient-alarms-off", "POST"),
    ("api:patient-alarm-off", "DELETE"),
    ("api:patient-exports", "POST"),
    ("api:patient-confirm-name", "POST"),
    ("api:patient-rename", "POST"),
    ("api:patient-admit", "POST"),
    ("api:patient-transfer", "POST"),
    ("api:patient-discharge", "POST"),
}
# Logging in must be open to anonymous users: the login forms, the token endpoint, logout.
LOGIN = {
    "api:token",
    "rest_framework:login",
    "rest_framework:logout",
    "admin:login",
    "ward:login",
    "ward:logout",
}
# The central station's pages (ward/): a redirect to its login for anonymous users, GET only.
WARD = {"ward:ward", "ward:patient", "ward:unit-report"}
# The pages' stream of changes (ward/events.py): no login redirect (EventSource cannot follow
# one to a form), a bare 403 for anyone not signed in; GET only.
STREAM = {"ward:events"}
# What a FHIR server says it does (/fhir/metadata): open to anyone, GET only.
OPEN = {"fhir:metadata"}
# The catch-alls under the API and FHIR prefixes: a 404 in their JSON shape, whatever the method.
UNKNOWN = {"api-unknown", "fhir:unknown"}
# Everything else under admin/ (index, models, history, autocomplete, the catch-all...): the
# admin's own staff check, a redirect to its login.
ADMIN_NAMESPACE = "admin"


@dataclass(frozen=True)
class Route:
    key: str  # the namespaced name, or "/<route>" for a pattern without a name
    namespace: str
    route: str  # as ResolverMatch.route has it
    regex: str
    converters: dict
    callback: Callable

    def url(self, values: dict[str, str]) -> str:
        """A URL of this pattern with `values` for its parameters (converted as the pattern's
        converters would), checked to resolve back to this very pattern."""
        names = set(re.compile(self.regex).groupindex)
        unknown = names - set(values)
        assert not unknown, f"{self.route}: no value for the parameters {unknown}; add them"
        templates = [t for t, params in normalize(self.regex) if set(params) == names]
        assert templates, f"cannot build a URL for {self.route}"
        template = templates[0]
        filled = {
            name: self.converters[name].to_url(values[name])
            if name in self.converters
            else values[name]
            for name in names
        }
        url = "/" + template % filled
        match = resolve(url.split("?")[0])
        assert (match.route, match.func) == (self.route, self.callback), (url, match)
        return url

    def drf_methods(self) -> set[str] | None:
        """The methods a DRF view takes (None: not a DRF view)."""
        cls = getattr(self.callback, "cls", None)
        if cls is None:
            return None
        actions = getattr(self.callback, "actions", None)
        if actions:
            return {method.upper() for method in actions}
        return {m.upper() for m in cls.http_method_names if hasattr(cls, m)} - {"OPTIONS"}


def _join(route1: str, route2: str) -> str:  # as django.urls.resolvers.URLResolver does
    return route2 if not route1 else route1 + route2.removeprefix("^")


def walk(
    resolver: URLResolver | None = None,
    regex: str = "",
    route: str = "",
    namespaces: tuple[str, ...] = (),
    converters: dict | None = None,
) -> Iterator[Route]:
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        entry_regex = regex + entry.pattern.regex.pattern.removeprefix("^")
        entry_route = _join(route, str(entry.pattern))
        entry_converters = {**(converters or {}), **entry.pattern.converters}
        if isinstance(entry, URLResolver):
            spaces = (*namespaces, entry.namespace) if entry.namespace else namespaces
            yield from walk(entry, entry_regex, entry_route, spaces, entry_converters)
            continue
        assert isinstance(entry, URLPattern)
        namespace = ":".join(namespaces)
        if entry.name:
            key = f"{namespace}:{entry.name}" if namespace else entry.name
        else:
            key = f"/{entry_route}"
        yield Route(key, namespace, entry_route, entry_regex, entry_converters, entry.callback)


def category(route: Route) -> str | None:
    for name, members in (
        ("health", HEALTH),
        ("metrics", METRICS),
        ("api", API),
        ("login", LOGIN),
        ("ward", WARD),
        ("stream", STREAM),
        ("open", OPEN),
        ("unknown", UNKNOWN),
    ):
        if route.key in members:
            return name
    if route.namespace == ADMIN_NAMESPACE:
        return "admin"
    return None


def test_every_url_pattern_is_classified():
    routes = list(walk())
    unclassified = sorted({r.key for r in routes if category(r) is None})
    assert not unclassified, (
        f"New URL patterns: {unclassified}. Decide who may use them (core/permissions.py for the "
        "API) and classify them in this test."
    )
    # And nothing classified that is gone: the lists stay the URLconf's.
    keys = {r.key for r in routes}
    assert (HEALTH | METRICS | API | LOGIN | WARD | OPEN | UNKNOWN) - keys == set()
    assert {route for route, _ in API_WRITES} <= API
    # The walk reaches the admin, the brief's paths, the schema and the docs.
    assert {
        "admin:index",
        "admin:vitals_alarm_changelist",
        "admin:vitals_auditevent_change",
    } <= keys
    assert {"api:brief-patient-list", "api:brief-patient-metrics", "api:schema"} <= keys
    assert len(routes) > 80  # the admin's alone are over 60


# --- the walk --------------------------------------------------------------------------------
def admin_refusal(route: Route, url: str) -> str:
    """Where the admin sends someone who is not staff: its login, then back. Its logout has
    nobody to log out and sends to the index, which sends to the login."""
    if route.key == "admin:logout":
        assert Client().get("/admin/")["Location"] == "/admin/login/?next=/admin/"
        return "/admin/"
    return f"/admin/login/?next={url}"


def snapshot() -> dict[str, list[dict]]:
    """Every row of every table (the test database is small), every column as the database
    holds it. In raw SQL, one statement a model: the walks take one snapshot a request, some
    1,500 in all, and the ORM's `values()` cost them four times as much."""
    ops = connection.ops
    rows = {}
    with connection.cursor() as cursor:
        for model in apps.get_models():
            table, pk = ops.quote_name(model._meta.db_table), ops.quote_name(model._meta.pk.column)
            cursor.execute(f"SELECT * FROM {table} ORDER BY {pk}")  # noqa: S608 (our names)
            columns = [column[0] for column in cursor.description]
            rows[model._meta.label] = [dict(zip(columns, row, strict=True)) for row in cursor]
    return rows


@pytest.fixture
def ward(viewer) -> dict[str, str]:
    """Something to change everywhere: a patient with readings, custom alarm limits, an alarm
    switched off, an active alarm and an audit trail; the values that fill the URLs' parameters."""
    patient = PatientFactory(name="walker")
    PatientMetricFactory(patient=patient)
    alarm_limits_update(patient=patient, user=None, pulse_high=130)
    alarm_switch_off(patient=patient, kind="pulse_high", reason="pacing", user=None)
    alarm = AlarmFactory(patient=patient)
    export = ExportFactory(patient=patient, requested_by=viewer)
    unit = Unit.objects.create(code="icu-a", name="ICU A")
    unit.beds.create(label="1", position=1)
    return {
        "code": unit.code,
        "patient_uuid": str(patient.uuid),
        "kind": "pulse_high",
        "pk": str(alarm.pk),
        "export_id": str(export.id),
        "format": "json",
        "object_id": str(patient.pk),
        "id": str(viewer.pk),
        "app_label": "vitals",
        "content_type_id": "1",
        "url": "no-such-page/",
    }


def test_anonymous_users_are_refused_everywhere_but_the_health_checks_and_the_logins(ward):
    client = Client()
    api = APIClient()
    seen: dict[str, int] = {}
    # Taken once: each request below is checked to leave every row as it was before the walk
    # (so also as before that request), one snapshot a request instead of two.
    before = snapshot()
    for route in walk():
        kind, url = category(route), route.url(ward)
        response = (api if kind == "api" else client).get(url)
        seen[kind] = seen.get(kind, 0) + 1
        where = f"GET {url} ({route.key})"
        if kind == "health":
            assert response.status_code in (200, 503), where
        elif kind == "open":
            assert response.status_code == 200, where
        elif kind == "unknown":
            assert response.status_code == 404, where
        elif kind == "api":
            assert response.status_code == 401, where
            assert response["Content-Type"] == "application/json", where
            assert response.json() == NOT_AUTHENTICATED, where
        elif kind == "metrics":
            assert response.status_code == 401, where
            assert response.json()["error"]["code"] == "not_authenticated", where
        elif kind == "admin":
            assert response.status_code == 302, where
            assert response["Location"] == admin_refusal(route, url), where
        elif kind == "ward":
            assert response.status_code == 302, where
            assert response["Location"] == f"/login/?next={quote(url)}", where
        elif kind == "stream":
            assert (response.status_code, response.content) == (403, b""), where
        else:  # a login form, or 405 where GET is no way to log in (token, logout)
            assert kind == "login", where
            assert response.status_code == (405 if url.endswith(("token/", "logout/")) else 200)
        assert snapshot() == before, where

        for method in WRITE_METHODS:
            response = (api if kind == "api" else client).generic(method, url)
            where = f"{method} {url} ({route.key})"
            if kind == "api":
                assert response.status_code == 401, where
            elif kind == "admin":
                assert response.status_code == 302, where
                assert response["Location"] == admin_refusal(route, url), where
            elif kind == "ward":  # the login comes first, whatever the method
                assert response.status_code == 302, where
                assert response["Location"] == f"/login/?next={quote(url)}", where
            elif kind in ("health", "metrics", "open", "stream"):
                assert response.status_code == 405, where
            elif kind == "unknown":
                assert response.status_code == 404, where
            # login: an empty form or credentials are refused (400/200 with errors), logout
            # of nobody redirects; whatever the answer, nothing changes.
            assert snapshot() == before, where
    assert set(seen) == {
        "health", "metrics", "api", "login", "ward", "stream", "admin", "open", "unknown"
    }  # fmt: skip


def test_a_viewer_changes_nothing_anywhere(ward, viewer, viewer_client):
    """Every method but GET on every URL, as a viewer (by token for the API, by session for
    the rest): 403 where the view takes the method, 405 where it does not, the admin's login
    redirect for the admin; and not one row of the database changes."""
    session = Client()
    session.force_login(viewer)
    writes_seen = set()
    before = snapshot()  # each request is checked to leave every row as it was (see above)
    for route in walk():
        kind, url = category(route), route.url(ward)
        takes = route.drf_methods()
        for method in WRITE_METHODS:
            if kind == "login" and route.key.endswith("logout"):
                continue  # logging out is allowed to anyone: below
            client = viewer_client if kind == "api" else session
            response = client.generic(method, url)
            where = f"{method} {url} ({route.key})"
            if kind == "api":
                if method in takes:
                    writes_seen.add((route.key, method))
                    assert response.status_code == 403, where
                    assert response.json()["error"]["code"] == "permission_denied", where
                else:
                    assert response.status_code == 405, where
            elif kind == "admin":
                assert response.status_code == 302, where
                assert response["Location"] == admin_refusal(route, url), where
            elif kind in ("health", "metrics", "ward", "open", "stream"):
                assert response.status_code == 405, where
            elif kind == "unknown":
                assert response.status_code == 404, where
            else:
                assert kind == "login", where
                assert response.status_code in (200, 400, 405), where
            assert snapshot() == before, where
    # What the API lets anyone write is exactly the known list: a new write shows up here.
    assert writes_seen == API_WRITES
    alarm = Alarm.objects.get(pk=ward["pk"])
    assert (alarm.state, alarm.acknowledged_by) == ("active", None)
    assert Patient.objects.get(uuid=ward["patient_uuid"]).alarm_limits.pulse_high == 130

    # Logging out ends the viewer's own session and changes nothing else.
    before = snapshot()
    assert [s["session_key"] for s in before.pop("sessions.Session")] == [
        session.session.session_key
    ]
    assert session.post("/api/auth/logout/").status_code in (200, 302)
    after = snapshot()
    assert after.pop("sessions.Session") == []
    assert after == before
