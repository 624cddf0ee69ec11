"""The pages' stream of changes (ward/events.py): the change watcher's single step on a fake
clock, and the endpoint (who may read it, its format, a change pushed with the patients' uuids,
heartbeats, the process's limit of streams). The browser test of a reading pushed to the ward
is in test_browser.py."""

import logging
import queue
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.signals import request_finished
from django.db import OperationalError, close_old_connections, connection
from django.db.models import Max
from django.test import AsyncClient, Client

from patients.tests.factories import PatientFactory
from vitals.models import AlarmEvent, AuditEvent, PatientMetric
from vitals.tests.factories import AlarmFactory, PatientMetricFactory
from ward import events
from ward.events import ChangeWatcher

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def watcher(clock, monkeypatch) -> ChangeWatcher:
    """This process's watcher, stepped by the test (no thread)."""
    watcher = ChangeWatcher(max_clients=2, clock=clock)
    monkeypatch.setattr(watcher, "ensure_running", lambda: None)
    monkeypatch.setattr(events, "_watcher", watcher)
    return watcher


def test_the_watcher_reads_nothing_without_listeners_then_fans_out_changes_and_heartbeats(
    watcher, clock, django_assert_num_queries
):
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    PatientMetricFactory(patient=ann)
    with django_assert_num_queries(0):
        assert watcher.step() == set()
    everyone = watcher.subscribe(patient=None)
    bobs = watcher.subscribe(patient=str(bob.uuid))

    with django_assert_num_queries(3):  # the marks as they stand: no change, a heartbeat
        assert watcher.step() == set()
    assert [watcher.take(everyone), watcher.take(bobs)] == ["event: heartbeat\ndata: {}\n\n"] * 2

    # A reading of ann's, an alarm change of bob's, an admission of ann's: one step each.
    PatientMetricFactory(patient=ann)
    clock.now += 0.2
    with django_assert_num_queries(3):
        assert watcher.step() == {str(ann.uuid)}
    alarm = AlarmFactory(patient=bob)
    AlarmEvent.objects.create(alarm=alarm, type=AlarmEvent.Type.RAISED, payload={})
    AuditEvent.objects.create(
        action=AuditEvent.Action.PATIENT_ADMIT,
        object_type="admission",
        object_id="1",
        patient_uuid=ann.uuid,
    )
    clock.now += 0.2
    assert watcher.step() == {str(ann.uuid), str(bob.uuid)}
    assert watcher.step() == set()  # past the marks now
    both = sorted([str(ann.uuid), str(bob.uuid)])
    assert (
        watcher.take(everyone)
        == f'event: changed\ndata: {{"patients":["{both[0]}","{both[1]}"]}}\n\n'
    )
    assert watcher.take(bobs) == f'event: changed\ndata: {{"patients":["{bob.uuid}"]}}\n\n'
    assert watcher.take(everyone) == ""

    # A heartbeat every HEARTBEAT_SECONDS of the clock, after a read that succeeded.
    clock.now += events.HEARTBEAT_SECONDS - 0.5
    watcher.step()
    assert watcher.take(everyone) == ""
    clock.now += 0.5
    watcher.step()
    assert watcher.take(everyone) == "event: heartbeat\ndata: {}\n\n"

    watcher.unsubscribe(everyone)
    watcher.unsubscribe(bobs)
    with django_assert_num_queries(0):
        watcher.step()
    assert watcher.trails is None  # read anew for the next listener


def test_a_new_stream_hears_a_heartbeat_after_the_next_read_not_five_seconds_later(watcher, clock):
    # The page takes a heartbeat, not the stream's opening, for the watcher reading the
    # database (ward/static/ward/js/api.js): a new stream has one after the next read.
    early = watcher.subscribe(patient=None)
    watcher.step()
    assert watcher.take(early) == "event: heartbeat\ndata: {}\n\n"
    late = watcher.subscribe(patient=None)
    clock.now += 1
    watcher.step()
    assert [watcher.take(late), watcher.take(early)] == ["event: heartbeat\ndata: {}\n\n", ""]
    clock.now += 1
    watcher.step()
    assert watcher.take(late) == ""


def test_a_row_committed_below_the_highest_id_seen_is_reported_at_the_next_step(watcher, clock):
    ann, bob, cid = (PatientFactory(name=name) for name in ("ann", "bob", "cid"))
    everyone = watcher.subscribe(patient=None)
    mark = PatientMetric.objects.aggregate(m=Max("pk"))["m"] or 0
    watcher.step()  # the marks
    # Two consumers (or an API write during a batch, on PostgreSQL): ann's row was given its
    # id first but commits after bob's.
    PatientMetricFactory(patient=bob, id=mark + 3)
    clock.now += 0.2
    assert watcher.step() == {str(bob.uuid)}
    PatientMetricFactory(patient=ann, id=mark + 1)
    clock.now += 0.2
    assert watcher.step() == {str(ann.uuid)}
    clock.now += 0.2
    assert watcher.step() == set()  # reported once
    both = sorted([str(ann.uuid), str(bob.uuid)])
    assert (
        watcher.take(everyone)
        == f'event: changed\ndata: {{"patients":["{both[0]}","{both[1]}"]}}\n\n'
    )
    # An id still missing after LATE_SECONDS (rolled back, mostly) is read for no longer.
    clock.now += events.LATE_SECONDS
    watcher.step()
    assert watcher.trails["reading"].floor() == mark + 3
    PatientMetricFactory(patient=cid, id=mark + 2)
    assert watcher.step() == set()


@pytest.mark.engine_neutral
@pytest.mark.django_db(transaction=True)  # a failed read closes the connection
def test_a_failed_read_keeps_the_marks_and_the_next_reports_what_was_committed_meanwhile(
    watcher, clock, caplog
):
    caplog.set_level(logging.INFO, logger="ward.events")
    ann = PatientFactory(name="ann")
    everyone = watcher.subscribe(patient=None)
    watcher.tick()
    assert watcher.take(everyone) == "event: heartbeat\ndata: {}\n\n"
    read, failures = watcher.read, [OperationalError("server closed the connection unexpectedly")]

    def flaky(*, floors):
        if failures:
            raise failures.pop()
        return read(floors=floors)

    watcher.read = flaky
    PatientMetricFactory(patient=ann)
    clock.now += 0.2
    watcher.tick()  # the read fails: nothing sent
    assert watcher.take(everyone) == ""
    clock.now += 0.2
    watcher.tick()
    assert watcher.take(everyone) == f'event: changed\ndata: {{"patients":["{ann.uuid}"]}}\n\n'
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "ward change watcher: the read failed"),
        ("INFO", "ward change watcher: reading again"),
    ]


@pytest.mark.engine_neutral
def test_a_watcher_whose_step_hangs_is_replaced_by_a_new_thread(clock, monkeypatch, caplog):
    watcher = ChangeWatcher(max_clients=2, clock=clock)
    monkeypatch.setattr(events, "WATCH_SECONDS", 0.01)
    release, stepping = threading.Event(), queue.Queue()

    def hung(*, generation=None) -> set:  # a read on a dead connection
        stepping.put(threading.current_thread())
        release.wait(10)
        return set()

    monkeypatch.setattr(watcher, "step", hung)
    watcher.ensure_running()
    first = stepping.get(timeout=2)
    try:
        clock.now += events.STUCK_SECONDS
        watcher.ensure_running()
        assert watcher.thread is first
        clock.now += 1
        watcher.ensure_running()
        second = stepping.get(timeout=2)
        assert second is watcher.thread is not first
        assert caplog.messages == ["ward change watcher: no step for 6 s, a new thread replaces it"]
        release.set()
        first.join(timeout=2)
        assert not first.is_alive()  # its step returned at last: it stops
        assert watcher.thread.is_alive()
    finally:
        release.set()
        watcher.stopping.set()
        watcher.thread.join(timeout=2)


def test_the_watchers_reads_time_out_on_postgresql(watcher, django_assert_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's statement_timeout")
    watcher.reads_time_out()
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("2s",)
    with django_assert_num_queries(0):  # once a connection
        watcher.reads_time_out()


def test_the_stream_answers_only_whoever_may_read_the_page(
    client: Client, viewer, settings, django_user_model
):
    patient = PatientFactory()
    assert client.get("/events/").status_code == 403  # no session
    nobody = django_user_model.objects.create_user("nobody", password="x" * 16)
    client.force_login(nobody)
    assert client.get("/events/").status_code == 403  # no role
    assert client.get(f"/events/?patient={patient.uuid}").status_code == 403
    client.force_login(viewer)
    assert client.get("/events/?patient=nope").status_code == 400
    assert client.post("/events/").status_code == 405
    # Under a WSGI server whose workers a stream would hold (gunicorn's sync workers, as this
    # test client): 204, which stops EventSource; the page polls.
    assert client.get("/events/").status_code == 204
    settings.WARD_PUSH_MAX_CLIENTS = 0
    assert client.get("/events/").status_code == 204


def closed(response) -> None:
    """As the ASGI handler closes a response when its client has gone, but keeping the test's
    database connection (as Django's test client does, disconnecting close_old_connections)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def test_a_change_is_pushed_to_the_streams_with_the_patients_uuids(viewer, watcher, clock):
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    client = AsyncClient()

    @async_to_sync
    async def run() -> list:
        await client.aforce_login(viewer)
        ward = await client.get("/events/")
        bobs = await client.get(f"/events/?patient={bob.uuid}")
        full = await client.get("/events/")  # max_clients=2
        ward_stream, bobs_stream = aiter(ward.streaming_content), aiter(bobs.streaming_content)
        first = [await anext(ward_stream), await anext(bobs_stream)]
        await sync_to_async(watcher.step)()  # the marks, a heartbeat
        beats = [await anext(ward_stream), await anext(bobs_stream)]
        await sync_to_async(PatientMetricFactory)(patient=ann)
        clock.now += 1
        await sync_to_async(watcher.step)()
        changed = await anext(ward_stream)
        await sync_to_async(PatientMetricFactory)(patient=bob)
        clock.now += 1
        await sync_to_async(watcher.step)()
        bobs_changed = [await anext(ward_stream), await anext(bobs_stream)]
        await sync_to_async(closed)(ward)  # a client gone: its place is free
        again = await client.get("/events/")
        for response in (bobs, again):
            await sync_to_async(closed)(response)
        return [ward, full, first, beats, changed, bobs_changed, again.status_code]

    ward, full, first, beats, changed, bobs_changed, again = run()

    assert ward.status_code == 200
    assert (ward["Content-Type"], ward["Cache-Control"]) == ("text/event-stream", "no-store")
    assert (full.status_code, full["Retry-After"]) == (503, "30")
    assert first == [b": connected\n\n"] * 2
    assert beats == [b"event: heartbeat\ndata: {}\n\n"] * 2
    assert changed == f'event: changed\ndata: {{"patients":["{ann.uuid}"]}}\n\n'.encode()
    assert bobs_changed == [f'event: changed\ndata: {{"patients":["{bob.uuid}"]}}\n\n'.encode()] * 2
    assert again == 200
    assert watcher.subscriptions == set()


def test_pages_of_the_allowed_hosts_read_the_push_process_on_another_port(
    client: Client, viewer, watcher, settings
):
    settings.WARD_EVENTS_PORT = 8001
    settings.ALLOWED_HOSTS = ["icu.example.org"]
    settings.CSRF_TRUSTED_ORIGINS = ["http://icu.example.org:8000"]  # the pages' web server
    client.force_login(viewer)

    page = client.get("/", HTTP_HOST="icu.example.org:8000")
    policy = dict(d.strip().split(" ", 1) for d in page["Content-Security-Policy"].split(";"))
    assert policy["connect-src"] == "'self' http://icu.example.org:8001"
    assert '"eventsPort": 8001' in page.content.decode()

    # A threaded WSGI server (runserver): the stream a thread.
    threaded = {"wsgi.multithread": True, "HTTP_HOST": "icu.example.org:8001"}
    stream = client.get("/events/", HTTP_ORIGIN="http://icu.example.org:8000", **threaded)
    assert stream["Access-Control-Allow-Origin"] == "http://icu.example.org:8000"
    assert stream["Access-Control-Allow-Credentials"] == "true"
    assert stream["Vary"] == "Origin, Cookie"
    assert next(iter(stream.streaming_content)) == b": connected\n\n"
    other = client.get("/events/", HTTP_ORIGIN="http://elsewhere.example", **threaded)
    assert "Access-Control-Allow-Origin" not in other
    for response in (stream, other):
        closed(response)
    assert watcher.subscriptions == set()
