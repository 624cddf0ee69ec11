"""A unit as its central station reads it (GET units/, units/{code}/) and how patients get
into its beds without a clinician: AUTO_ADMIT, the demo unit of `make run`."""

import logging
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import Patient
from patients.tests.factories import PatientFactory
from patients.tests.test_api import reading
from units.models import Admission, Bed, Unit
from units.services import admission_create, admission_discharge, unit_demo_ensure
from units.tests.conftest import bed
from vitals.services import reading_bulk_store
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db


def recent_reading(patient: Patient, minutes_ago: float = 0) -> None:
    PatientMetricFactory(
        patient=patient, received_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    patient.latest_metric = patient.metrics.latest("id")
    patient.save(update_fields=["latest_metric"])


def test_units_list_counts_beds_and_occupied_beds(api_client, viewer_client, unit) -> None:
    Unit.objects.create(code="hdu", name="HDU")
    admission_create(patient=PatientFactory(), bed=bed(unit, "A2"), by=None)
    discharged = PatientFactory()
    admission_create(patient=discharged, bed=bed(unit, "A3"), by=None)
    admission_discharge(patient=discharged, by=None)

    response = viewer_client.get("/api/units/")

    assert response.status_code == 200
    assert response.json() == [
        {
            "code": "hdu",
            "name": "HDU",
            "url": "http://testserver/api/units/hdu/",
            "beds": 0,
            "occupied": 0,
        },
        {
            "code": "icu-a",
            "name": "ICU A",
            "url": "http://testserver/api/units/icu-a/",
            "beds": 4,
            "occupied": 1,
        },
    ]


def test_a_unit_shows_its_beds_in_order_with_their_patients_and_the_unassigned(
    viewer_client, unit
) -> None:
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    recent_reading(ann)
    AlarmFactory(patient=ann)
    admission_create(patient=ann, bed=bed(unit, "A3"), by=None)
    recent_reading(bob, minutes_ago=1)  # in no bed, sending: unassigned
    recent_reading(PatientFactory(name="old"), minutes_ago=61)  # quiet for over an hour
    ended = PatientFactory(name="ended", monitoring_ended_at=timezone.now())
    recent_reading(ended)
    Bed.objects.filter(unit=unit, label="A1").update(position=9)  # A1 moved to the end

    response = viewer_client.get("/api/units/icu-a/")

    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["name"]) == ("icu-a", "ICU A")
    assert [(b["label"], b["position"]) for b in body["beds"]] == [
        ("A2", 2),
        ("A3", 3),
        ("A4", 4),
        ("A1", 9),
    ]
    a3 = body["beds"][1]
    assert a3["id"] == bed(unit, "A3").pk
    assert a3["admitted_at"] is not None
    # The patient list's item, as /api/patients/ gives it.
    listed = viewer_client.get("/api/patients/?unit=icu-a").json()["results"]
    assert a3["patient"] == listed[0]
    assert a3["patient"]["active_alarms"][0]["kind"] == "spo2_low"
    assert [b["patient"] for b in body["beds"] if b["label"] != "A3"] == [None, None, None]
    assert [p["name"] for p in body["unassigned"]] == ["bob"]
    missing = viewer_client.get("/api/units/nowhere/")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unit_not_found")


@pytest.mark.parametrize("beds", [1, 32, 64])
def test_a_unit_is_read_in_the_same_number_of_queries_whatever_its_beds(
    viewer_client, django_assert_num_queries, beds: int
) -> None:
    unit = Unit.objects.create(code="big", name="Big")
    for position in range(1, beds + 1):
        patient = PatientFactory()
        recent_reading(patient)
        AlarmFactory(patient=patient)
        admission_create(
            patient=patient,
            bed=Bed.objects.create(unit=unit, label=str(position), position=position),
            by=None,
        )
    recent_reading(PatientFactory(name="unassigned"))

    # The token with the user's permissions, the unit, its beds, their open admissions, the patients
    # and their open alarms, the unassigned and their open alarms.
    with django_assert_num_queries(8):
        response = viewer_client.get("/api/units/big/")

    body = response.json()
    assert len(body["beds"]) == beds
    assert all(len(b["patient"]["active_alarms"]) == 1 for b in body["beds"])
    assert [p["name"] for p in body["unassigned"]] == ["unassigned"]


def store(patient_uuid: uuid.UUID, name: str, minute: int = 0) -> Patient:
    reading_bulk_store(readings=[reading(patient_uuid, name, minute)])
    return Patient.objects.get(uuid=patient_uuid)


def occupants(unit: Unit) -> list[tuple[str, str]]:
    return list(
        Admission.objects.filter(bed__unit=unit, discharged_at__isnull=True)
        .order_by("bed__position")
        .values_list("bed__label", "patient__name")
    )


def test_auto_admit_puts_a_new_monitor_in_the_first_free_bed(settings, unit, caplog) -> None:
    settings.AUTO_ADMIT, settings.DEFAULT_UNIT = True, "icu-a"
    admission_create(patient=PatientFactory(name="zed"), bed=bed(unit, "A1"), by=None)

    ann = store(uuid.uuid4(), "ann")
    store(uuid.uuid4(), "bob")
    store(ann.uuid, "ann", minute=1)  # known: stays where they are

    assert occupants(unit) == [("A1", "zed"), ("A2", "ann"), ("A3", "bob")]
    auto = Admission.objects.get(patient=ann)
    assert (auto.admitted_by, auto.reason) == (None, "AUTO_ADMIT: first reading of a monitor")
    # Full: the next one waits unassigned, logged once.
    store(uuid.uuid4(), "cid")
    with caplog.at_level(logging.WARNING, logger="units.services"):
        dan = store(uuid.uuid4(), "dan")
        store(dan.uuid, "dan", minute=1)
    assert occupants(unit)[-1] == ("A4", "cid")
    assert not Admission.objects.filter(patient=dan).exists()
    assert [r.getMessage() for r in caplog.records] == [
        "AUTO_ADMIT: no free bed; the patient waits under unassigned monitors"
    ]


def test_auto_admit_does_not_take_back_a_discharged_patient(settings, unit) -> None:
    settings.AUTO_ADMIT, settings.DEFAULT_UNIT = True, "icu-a"
    ann = store(uuid.uuid4(), "ann")
    admission_discharge(patient=ann, by=None)

    store(ann.uuid, "ann", minute=1)  # the monitor still sends

    assert occupants(unit) == []
    ann.refresh_from_db()
    assert ann.latest_metric.measured_at == reading(ann.uuid, "ann", 1).measured_at


def test_without_auto_admit_a_new_monitor_waits_unassigned(settings, unit) -> None:
    settings.AUTO_ADMIT = False
    store(uuid.uuid4(), "ann")

    assert occupants(unit) == []
    assert Patient.objects.get().latest_metric is not None


def test_the_demo_unit_has_eight_beds_and_is_made_once(settings) -> None:
    call_command("units_demo", stdout=StringIO())
    unit_demo_ensure()

    unit = Unit.objects.get()
    assert (unit.code, unit.name) == ("icu", "Intensive care unit")
    assert list(unit.beds.values_list("label", "position")) == [(str(n), n) for n in range(1, 9)]


def test_auto_admit_costs_one_query_a_batch_once_the_patients_are_known(settings, unit) -> None:
    settings.AUTO_ADMIT, settings.DEFAULT_UNIT = True, "icu-a"
    patients = [uuid.uuid4() for _ in range(3)]
    reading_bulk_store(readings=[reading(p, f"p{i}", 0) for i, p in enumerate(patients)])
    assert len(occupants(unit)) == 3

    counts = {}
    for auto_admit in (False, True):
        settings.AUTO_ADMIT = auto_admit
        minute = 1 + auto_admit
        batch = [reading(p, f"p{i}", minute) for i, p in enumerate(patients)]
        with CaptureQueriesContext(connection) as queries:
            reading_bulk_store(readings=batch)
        counts[auto_admit] = len(queries)

    assert counts[True] == counts[False] + 1
