"""The pushed updates (GET /events/, ward/events.py) under attack and neglect: a page of another
origin, a reader that stops reading, a change the stream does not carry. A missed push leaves
a page showing an old entry under "Live" until its fallback poll (WARD_PUSH_POLL_SECONDS); a
stream slot taken by someone else sends a station back to polling. The stateful test of every
change being pushed is vitals/tests/test_tile_consistency.py (every_change_is_pushed)."""

import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient, Client

from patients.tests.factories import PatientFactory
from vitals.models import AuditEvent
from vitals.services import patient_identify
from vitals.tests.factories import PatientMetricFactory
from ward import events
from ward.events import ChangeWatcher
from ward.tests.test_events import FakeClock, closed

pytestmark = pytest.mark.django_db

# A threaded WSGI server (runserver, the tests' live server): the view streams.
THREADED = {"wsgi.multithread": True, "HTTP_HOST": "icu.example.org:8001"}


@pytest.fixture
def watcher(monkeypatch) -> ChangeWatcher:
    """This process's watcher, stepped by the test (no thread): two streams at most."""
    watcher = ChangeWatcher(max_clients=2, clock=FakeClock())
    monkeypatch.setattr(watcher, "ensure_running", lambda: None)
    monkeypatch.setattr(events, "_watcher", watcher)
    return watcher


def test_a_page_of_another_origin_takes_no_stream(client: Client, viewer, watcher, settings):
    """Another site's page (a same-site one: another application of the hospital's domain,
    whose requests carry the nurse's session cookie) opens streams in the nurse's browser. The
    browser hides their answers from it (no CORS header), but each held one of the process's
    WARD_PUSH_MAX_CLIENTS for five minutes: a few tabs of it, and every central station fell
    back to polling. An origin not of ALLOWED_HOSTS is now refused before any stream."""
    settings.WARD_EVENTS_PORT = 8001
    settings.ALLOWED_HOSTS = ["icu.example.org"]
    settings.CSRF_TRUSTED_ORIGINS = ["http://icu.example.org:8000"]  # the pages' web server
    client.force_login(viewer)
    for origin in ("https://apps.example.org", "null"):
        refused = client.get("/events/", HTTP_ORIGIN=origin, **THREADED)
        assert (refused.status_code, refused.get("Access-Control-Allow-Origin")) == (403, None)
    assert watcher.subscriptions == set()

    # The station's page, from the web server's port, and the push process's own origin.
    station = client.get("/events/", HTTP_ORIGIN="http://icu.example.org:8000", **THREADED)
    assert station.status_code == 200
    assert station["Access-Control-Allow-Origin"] == "http://icu.example.org:8000"
    same = client.get("/events/", **THREADED)  # no Origin: a same-origin EventSource
    assert same.status_code == 200
    for response in (station, same):
        closed(response)
    assert watcher.subscriptions == set()


def test_a_stream_not_read_holds_one_set_of_changes_not_a_queue(viewer, watcher) -> None:
    """A slow reader (a frozen tab, a congested link) is not sent a backlog: what changed while
    it did not read is one set of patients, told in one event when it reads again."""
    patients = [PatientFactory() for _ in range(3)]
    subscription = watcher.subscribe(patient=None)
    watcher.step()  # the marks
    assert watcher.take(subscription) == "event: heartbeat\ndata: {}\n\n"
    for _ in range(20):
        for patient in patients:
            PatientMetricFactory(patient=patient)
        watcher.clock.now += 0.2
        watcher.step()
    assert subscription.changed == {str(p.uuid) for p in patients}
    uuids = ",".join(f'"{u}"' for u in sorted(str(p.uuid) for p in patients))
    assert watcher.take(subscription) == f'event: changed\ndata: {{"patients":[{uuids}]}}\n\n'
    assert watcher.take(subscription) == ""


def test_an_mrn_given_by_a_monitors_message_is_pushed(viewer, watcher) -> None:
    """A PCD-01 message names a patient known by their monitor's uuid only: the MRN shows on
    the pages at once (the tile is written), so the pages must be told; and who gave it, from
    what, is on the audit trail (the row the watcher reads)."""
    ann = PatientFactory(name="Ann", uuid=uuid.uuid4(), mrn="", mrn_authority="")
    watcher.subscribe(patient=str(ann.uuid))
    watcher.step()  # the marks
    patient_identify(
        patient_uuid=ann.uuid,
        name="Ann",
        mrn="MRN-7",
        mrn_authority="HOSP",
        actor="HL7 ORU R01 1203 from 00A037EB0C0F5CB8",
    )
    watcher.clock.now += 0.2
    assert watcher.step() == {str(ann.uuid)}
    assert list(
        AuditEvent.objects.values_list(
            "action", "username", "user", "object_type", "object_id", "patient_uuid"
        )
    ) == [
        (
            "patient.identify",
            "HL7 ORU R01 1203 from 00A037EB0C0F5CB8",
            None,
            "patient",
            str(ann.pk),
            ann.uuid,
        )
    ]
    assert list(AuditEvent.objects.values_list("before", "after")) == [
        ({"mrn": "", "mrn_authority": ""}, {"mrn": "MRN-7", "mrn_authority": "HOSP"})
    ]

    # Known by that MRN already: nothing changes, nothing is recorded or pushed.
    patient_identify(
        patient_uuid=ann.uuid, name="Ann", mrn="MRN-8", mrn_authority="HOSP", actor="HL7 ORU R01 1"
    )
    watcher.clock.now += 0.2
    assert watcher.step() == set()
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize(
    "origin",
    [
        "https://icu.example.org:8001",  # the push process's host and port, another scheme
        "http://icu.example.org:9000",  # another port of the host: another application
        "http://icu.example.org",  # port 80: another server of the host
        "https://icu.example.org:8000",  # the pages' port, but not their scheme
    ],
)
def test_another_scheme_or_port_of_an_allowed_host_takes_no_stream(
    client: Client, viewer, watcher, settings, origin
):
    """An origin is a scheme, a host and a port: another port of the station's host is another
    application (a printer's page, a vendor's console), as another scheme is. Only the stream's
    own origin and CSRF_TRUSTED_ORIGINS (the pages' web server, on another port of the host:
    WARD_EVENTS_PORT) are let in, exactly, as Django's CSRF check takes an Origin: 403 before
    any stream."""
    settings.WARD_EVENTS_PORT = 8001
    settings.ALLOWED_HOSTS = ["icu.example.org"]
    settings.CSRF_TRUSTED_ORIGINS = ["http://icu.example.org:8000"]
    client.force_login(viewer)

    refused = client.get("/events/", HTTP_ORIGIN=origin, **THREADED)

    assert (refused.status_code, refused.get("Access-Control-Allow-Origin")) == (403, None)
    assert watcher.subscriptions == set()
    allowed = [
        client.get("/events/", HTTP_ORIGIN=good, **THREADED)
        for good in ("http://icu.example.org:8000", "http://icu.example.org:8001")
    ]
    assert [(r.status_code, r["Access-Control-Allow-Origin"]) for r in allowed] == [
        (200, "http://icu.example.org:8000"),
        (200, "http://icu.example.org:8001"),
    ]
    for response in allowed:
        closed(response)


def test_behind_a_proxy_that_ends_tls_the_pages_https_origin_is_the_streams_own(
    client: Client, viewer, watcher, settings
):
    """TLS ended at the reverse proxy (TRUST_X_FORWARDED_PROTO): the request is https as
    Django builds it, so the pages' https origin is the stream's own, and http is refused."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["icu.example.org"]
    client.force_login(viewer)
    proxied = {"wsgi.multithread": True, "HTTP_HOST": "icu.example.org"}
    proxied["HTTP_X_FORWARDED_PROTO"] = "https"

    http = client.get("/events/", HTTP_ORIGIN="http://icu.example.org", **proxied)
    https = client.get("/events/", HTTP_ORIGIN="https://icu.example.org", **proxied)

    assert [http.status_code, https.status_code] == [403, 200]
    closed(https)
    assert watcher.subscriptions == set()


def test_one_user_holds_at_most_their_share_of_the_streams_and_the_others_keep_theirs(
    viewer, user, watcher
):
    """One login (a script with a nurse's cookie, a station login left open on many screens)
    opened streams until the process had none left, and every other station polled. A user
    holds at most WARD_PUSH_MAX_CLIENTS_PER_USER (a quarter of the process's by default:
    shared station logins keep room); past it their new page is refused with 429 and a body
    saying why, and polls (EventSource stops on any status but 200). Another user still gets a
    stream, and the first gets one again once one of theirs closes."""
    watcher.max_clients, watcher.max_per_user = 4, 2
    observer, nurse = Client(), Client()
    observer.force_login(viewer)
    nurse.force_login(user)
    stream = {"wsgi.multithread": True}

    held = [observer.get("/events/", **stream) for _ in range(2)]
    refused = observer.get("/events/", **stream)
    others = [nurse.get("/events/", **stream) for _ in range(2)]

    assert [r.status_code for r in held] == [200, 200]
    assert (refused.status_code, refused["Retry-After"], refused["Content-Type"]) == (
        429,
        "30",
        "text/plain",
    )
    assert refused.content == (
        b"this user has 2 streams of changes open, the most one user may hold "
        b"(WARD_PUSH_MAX_CLIENTS_PER_USER): this page polls instead\n"
    )
    assert [r.status_code for r in others] == [200, 200]
    closed(held[0])
    again = observer.get("/events/", **stream)
    assert again.status_code == 200
    for response in (held[1], again, *others):
        closed(response)
    assert watcher.subscriptions == set()


def revoke_deactivated(client: Client, user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


def revoke_password_changed(client: Client, user) -> None:
    user.set_password("another-horse-10")
    user.save(update_fields=["password"])


def revoke_logged_out(client: Client, user) -> None:
    client.logout()  # in another tab: the session is gone from the store


def revoke_role_removed(client: Client, user) -> None:
    user.groups.clear()


@pytest.mark.parametrize(
    "revoke",
    [revoke_deactivated, revoke_password_changed, revoke_logged_out, revoke_role_removed],
)
def test_a_stream_ends_within_the_recheck_once_its_user_may_no_longer_read(
    client: Client, user, watcher, settings, revoke
):
    """A stream lasts STREAM_SECONDS (5 minutes): it went on telling which patients changed
    for that long after its user was deactivated, their password changed, their session ended
    or their role removed. It checks the user's right again every WARD_PUSH_RECHECK_SECONDS
    (and before any change it sends once that is due), and ends when it is gone: the page
    then polls, the API refuses it, and it shows what it shows for a lost session."""
    settings.WARD_PUSH_RECHECK_SECONDS = 0.3
    ann = PatientFactory(name="Ann")
    client.force_login(user)
    response = client.get("/events/", **{"wsgi.multithread": True})
    stream = iter(response.streaming_content)
    assert next(stream) == b": connected\n\n"
    watcher.step()  # the marks, a heartbeat
    assert next(stream) == b"event: heartbeat\ndata: {}\n\n"
    PatientMetricFactory(patient=ann)
    watcher.clock.now += 0.2
    watcher.step()
    assert next(stream) == f'event: changed\ndata: {{"patients":["{ann.uuid}"]}}\n\n'.encode()

    revoke(client, user)
    revoked = time.monotonic()
    time.sleep(settings.WARD_PUSH_RECHECK_SECONDS)  # the check is due
    PatientMetricFactory(patient=ann)
    watcher.clock.now += 0.2
    watcher.step()  # a change of ann's waits for the stream
    rest = list(stream)  # it ends by itself

    assert time.monotonic() - revoked < settings.WARD_PUSH_RECHECK_SECONDS + 0.5
    assert rest == []  # nothing of ann's once the check was due
    closed(response)
    assert watcher.subscriptions == set()


def test_a_stream_whose_user_keeps_the_right_lives_on_checked_at_each_interval(
    client: Client, user, watcher, settings, django_assert_num_queries
):
    settings.WARD_PUSH_RECHECK_SECONDS = 0.1
    client.force_login(user)
    response = client.get("/events/", **{"wsgi.multithread": True})
    stream = iter(response.streaming_content)
    assert next(stream) == b": connected\n\n"
    time.sleep(0.15)
    watcher.step()
    with django_assert_num_queries(4):  # the session, the user, their permissions (two)
        assert next(stream) == b"event: heartbeat\ndata: {}\n\n"
    closed(response)


def test_under_asgi_too_a_stream_ends_once_its_user_is_deactivated(user, watcher, settings):
    settings.WARD_PUSH_RECHECK_SECONDS = 0.2
    client = AsyncClient()

    @async_to_sync
    async def run() -> tuple:
        await client.aforce_login(user)
        response = await client.get("/events/")
        stream = aiter(response.streaming_content)
        first = await anext(stream)
        await sync_to_async(revoke_deactivated)(client, user)
        revoked = time.monotonic()
        rest = [chunk async for chunk in stream]
        took = time.monotonic() - revoked
        await sync_to_async(closed)(response)
        return first, rest, took

    first, rest, took = run()
    assert (first, rest) == (b": connected\n\n", [])
    assert took < settings.WARD_PUSH_RECHECK_SECONDS + 0.5
    assert watcher.subscriptions == set()
