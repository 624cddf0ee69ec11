"""Who looked at which patient: every read of a patient's data is recorded per user, patient
and kind, at most one row a window (ACCESS_LOG_WINDOW), written after the response; staff
read it in the API and the admin."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError
from django.test import Client

from access import services
from access.models import PatientAccess
from access.services import patient_access_flush
from exports.tests.factories import ExportFactory
from patients.tests.factories import PatientFactory
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC)  # 5 s into a 15-minute window


@pytest.fixture
def clock(monkeypatch) -> list[datetime]:
    """The access log's clock, at T0 until a test moves it (clock[0] = ...)."""
    now = [T0]
    monkeypatch.setattr(services, "_now", lambda: now[0])
    return now


@pytest.fixture
def patient():
    patient = PatientFactory(name="ann")
    PatientMetricFactory(patient=patient)
    return patient


def rows() -> list[tuple]:
    return list(
        PatientAccess.objects.order_by("username", "kind", "window_start").values_list(
            "username", "patient_uuid", "kind", "window_start", "first_at", "last_at", "count"
        )
    )


def poll(client, patient) -> None:
    """What the central station's patient page asks every WARD_POLL_SECONDS, in part."""
    assert client.get(f"/api/patients/{patient.uuid}/").status_code == 200
    assert client.get(f"/api/patients/{patient.uuid}/metrics/").status_code == 200


def test_fifty_polls_in_a_window_are_one_row_per_kind_with_their_count(
    viewer_client, patient, clock
):
    for n in range(50):  # a poll a second: all within FLUSH_EVERY of the first
        clock[0] = T0 + timedelta(seconds=n)
        poll(viewer_client, patient)

    # Written at the first read of the window; the reads after it only counted in memory.
    first = T0
    assert rows() == [
        ("observer", patient.uuid, "metrics", T0.replace(second=0), first, first, 1),
        ("observer", patient.uuid, "patient", T0.replace(second=0), first, first, 1),
    ]
    # Brought up to date after FLUSH_EVERY, or at the process's exit (atexit), or here:
    assert patient_access_flush() == 2
    last = T0 + timedelta(seconds=49)
    assert rows() == [
        ("observer", patient.uuid, "metrics", T0.replace(second=0), first, last, 50),
        ("observer", patient.uuid, "patient", T0.replace(second=0), first, last, 50),
    ]


def test_a_poll_after_flush_every_brings_the_count_up_to_date(viewer_client, patient, clock):
    poll(viewer_client, patient)
    clock[0] = T0 + timedelta(seconds=30)
    poll(viewer_client, patient)
    assert [r[-1] for r in rows()] == [1, 1]

    clock[0] = T0 + services.FLUSH_EVERY
    poll(viewer_client, patient)

    assert [r[-1] for r in rows()] == [3, 3]
    assert {r[5] for r in rows()} == {T0 + services.FLUSH_EVERY}


def test_a_second_window_is_a_new_row_and_two_users_are_two_rows(
    viewer_client, api_client, patient, clock
):
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    clock[0] = T0 + timedelta(minutes=15)  # the next window
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    api_client.get(f"/api/patients/{patient.uuid}/")

    window = T0.replace(second=0)
    next_window = window + timedelta(minutes=15)
    assert rows() == [
        ("nurse", patient.uuid, "patient", next_window, clock[0], clock[0], 1),
        ("observer", patient.uuid, "patient", window, T0, T0, 1),
        ("observer", patient.uuid, "patient", next_window, clock[0], clock[0], 1),
    ]


def test_the_window_is_the_setting(viewer_client, patient, clock, settings):
    settings.ACCESS_LOG_WINDOW = timedelta(hours=1)
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    clock[0] = T0 + timedelta(minutes=50)
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    patient_access_flush()

    assert rows() == [
        ("observer", patient.uuid, "patient", T0.replace(minute=0, second=0), T0, clock[0], 2)
    ]


def test_every_read_of_a_patients_record_is_logged_by_kind_and_the_ward_list_is_not(
    api_client, user, patient, clock
):
    other = PatientFactory(name="bob")
    alarm = AlarmFactory(patient=patient)
    AlarmFactory(patient=other)
    export = ExportFactory(patient=patient, requested_by=user)
    page = Client()
    page.force_login(user)

    # Every patient at once: the ward, not a patient's record.
    assert api_client.get("/api/patients/").status_code == 200
    assert api_client.get("/api/alarms/").status_code == 200
    assert page.get("/").status_code == 200
    assert rows() == []

    uuid = patient.uuid
    for url in (
        f"/api/patients/{uuid}/",
        f"/api/patients/{uuid}/metrics/",
        f"/api/patient/{uuid}/metrics",
        f"/api/patients/{uuid}/trend/",
        f"/api/alarms/?patient={uuid}",
        f"/api/alarms/{alarm.pk}/",
        f"/api/patients/{uuid}/exports/",
        f"/fhir/Observation?patient={uuid}",
    ):
        assert api_client.get(url).status_code == 200, url
    assert page.get(f"/patients/{uuid}/").status_code == 200
    assert api_client.post(f"/api/patients/{uuid}/exports/", {"format": "csv"}).status_code == 202
    assert api_client.get(f"/api/exports/{export.id}/result/").status_code == 409  # pending
    patient_access_flush()

    assert {(r[0], r[1], r[2], r[6]) for r in rows()} == {
        ("nurse", uuid, "patient", 1),
        ("nurse", uuid, "metrics", 2),
        ("nurse", uuid, "trend", 1),
        ("nurse", uuid, "alarms", 2),
        ("nurse", uuid, "exports", 2),  # the list and the request; a file not handed out: no
        ("nurse", uuid, "fhir", 1),
        ("nurse", uuid, "page", 1),
    }


def test_a_poll_costs_no_query_after_the_first_of_its_window(
    viewer_client, patient, clock, django_assert_num_queries
):
    url = f"/api/patients/{patient.uuid}/"
    # The token (with its user and their permissions), the patient, its open alarms; and
    # after the response the window's row: one INSERT (in a savepoint here, inside the test's
    # transaction).
    with django_assert_num_queries(3 + 3) as first:
        viewer_client.get(url)
    assert first.captured_queries[-2]["sql"].startswith('INSERT INTO "access_patientaccess"')
    for n in range(1, 5):
        clock[0] = T0 + timedelta(seconds=2 * n)
        with django_assert_num_queries(3) as later:
            viewer_client.get(url)
        assert not any("access" in q["sql"] for q in later.captured_queries)


def test_a_failing_write_never_fails_the_read_and_is_logged(
    viewer_client, patient, clock, monkeypatch, caplog
):
    def refuse(**kwargs):
        raise DatabaseError("attempt to write a readonly database")

    monkeypatch.setattr(services, "_upsert", refuse)
    with caplog.at_level(logging.ERROR, logger="access.services"):
        response = viewer_client.get(f"/api/patients/{patient.uuid}/")

    assert response.status_code == 200
    assert response.json()["uuid"] == str(patient.uuid)
    [record] = [r for r in caplog.records if r.name == "access.services"]
    assert (record.levelname, record.getMessage()) == ("ERROR", "access log not written")
    assert (record.username, record.patient_uuid, record.kind, record.reads) == (
        "observer",
        str(patient.uuid),
        "patient",
        1,
    )
    assert "attempt to write a readonly database" in record.exc_text
    # Forgotten, so that the next read tries again, and is written once the database takes it.
    monkeypatch.undo()
    monkeypatch.setattr(services, "_now", lambda: T0)
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    assert rows() == [("observer", patient.uuid, "patient", T0.replace(second=0), T0, T0, 1)]


# --- read by staff ------------------------------------------------------------------------------
@pytest.fixture
def access_log(viewer_client, api_client, patient, clock) -> dict:
    bob = PatientFactory(name="bob")
    viewer_client.get(f"/api/patients/{patient.uuid}/")
    clock[0] = T0 + timedelta(seconds=1)
    api_client.get(f"/api/patients/{patient.uuid}/trend/")
    clock[0] = T0 + timedelta(seconds=2)
    viewer_client.get(f"/api/patients/{bob.uuid}/")
    return {"ann": patient, "bob": bob}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "",
            [
                ("observer", "bob", "patient"),
                ("nurse", "ann", "trend"),
                ("observer", "ann", "patient"),
            ],
        ),
        ("?patient={ann}", [("nurse", "ann", "trend"), ("observer", "ann", "patient")]),
        ("?user=observer", [("observer", "bob", "patient"), ("observer", "ann", "patient")]),
        ("?patient={ann}&user=nurse", [("nurse", "ann", "trend")]),
        ("?user=nobody", []),
    ],
)
def test_staff_read_the_access_log_newest_first_by_patient_and_user(
    staff_client, access_log, query, expected
):
    uuids = {name: str(p.uuid) for name, p in access_log.items()}
    names = {value: key for key, value in uuids.items()}

    response = staff_client.get(f"/api/access-log/{query.format(**uuids)}")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["user"], names[r["patient"]], r["kind"]) for r in results] == expected
    if not query:
        assert results[0] == {
            "id": results[0]["id"],
            "user": "observer",
            "patient": uuids["bob"],
            "kind": "patient",
            "window_start": "2026-12-03T10:00:00Z",
            "first_at": "2026-12-03T10:00:07Z",
            "last_at": "2026-12-03T10:00:07Z",
            "count": 1,
        }


def test_a_bad_filter_is_400_in_the_error_shape(staff_client):
    response = staff_client.get("/api/access-log/?patient=123")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == ("invalid", {"patient": ["Must be a valid UUID."]})


def test_the_access_log_is_for_staff_with_its_permission(
    anon_client, api_client, viewer_client, django_user_model, access_log
):
    assert anon_client.get("/api/access-log/").status_code == 401
    for client in (api_client, viewer_client):
        response = client.get("/api/access-log/")
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "status": 403,
                "code": "permission_denied",
                "message": "Only staff may do this.",
            }
        }
    desk = django_user_model.objects.create_user("desk", password="x" * 16, is_staff=True)
    from testing.clients import token_client

    response = token_client(desk).get("/api/access-log/")
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Your role does not allow this; it takes the permissions access.view_patientaccess."
    )


def test_the_admin_lists_and_filters_the_log_and_never_changes_it(admin_client, access_log):
    base = "/admin/access/patientaccess/"
    ann = access_log["ann"]

    listed = admin_client.get(base, {"patient__id__exact": ann.pk})
    assert listed.status_code == 200
    assert sorted((r.username, r.kind) for r in listed.context["cl"].result_list) == [
        ("nurse", "trend"),
        ("observer", "patient"),
    ]
    by_user = admin_client.get(base, {"username": "nurse"})
    assert [r.kind for r in by_user.context["cl"].result_list] == ["trend"]
    row = PatientAccess.objects.filter(username="nurse").get()
    assert admin_client.get(f"{base}{row.pk}/change/").status_code == 200  # view only
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.post(f"{base}{row.pk}/change/", {"count": "0"}).status_code == 403
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
