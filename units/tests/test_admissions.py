"""Admit, transfer, discharge (units/services.py through the API): the rows they write, the
audit trail, the 409s, and what a discharge does to the patient's alarms and monitoring."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from patients.tests.factories import PatientFactory
from units.models import Admission, Unit
from units.tests.conftest import bed
from vitals.models import Alarm, AlarmEvent, AuditEvent
from vitals.services import alarm_no_data_sweep
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db


def admit(client, patient, bed_id, **body):
    return client.post(
        f"/api/patients/{patient.uuid}/admit/", {"bed": bed_id, **body}, format="json"
    )


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_admit_opens_an_admission_and_audits_it(api_client, unit, user) -> None:
    patient = PatientFactory(name="ann")
    a1 = bed(unit, "A1")

    response = admit(api_client, patient, a1.pk, reason="from theatre")

    assert response.status_code == 201
    admission = Admission.objects.get()
    body = response.json()
    assert body == {
        "id": admission.pk,
        "patient": str(patient.uuid),
        "bed": {"id": a1.pk, "label": "A1", "unit": "icu-a"},
        "admitted_at": body["admitted_at"],
        "admitted_by": "nurse",
        "reason": "from theatre",
        "discharged_at": None,
        "discharged_by": None,
        "end_reason": "",
        "discharge_reason": "",
    }
    assert (admission.patient, admission.bed, admission.admitted_by) == (patient, a1, user)
    event = AuditEvent.objects.get()
    assert (event.action, event.username, event.object_type, event.object_id) == (
        "patient.admit",
        "nurse",
        "admission",
        str(admission.pk),
    )
    assert event.patient_uuid == patient.uuid
    assert event.after == {
        "admission": admission.pk,
        "unit": "icu-a",
        "bed": "A1",
        "admitted_at": admission.admitted_at.isoformat(),
        "reason": "from theatre",
    }


def test_admit_refuses_an_occupied_bed_an_admitted_patient_and_an_unknown_bed(
    api_client, unit
) -> None:
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    assert admit(api_client, ann, bed(unit, "A1").pk).status_code == 201

    assert error(admit(api_client, bob, bed(unit, "A1").pk)) == (409, "bed_occupied")
    assert error(admit(api_client, ann, bed(unit, "A2").pk)) == (409, "already_admitted")
    assert error(admit(api_client, bob, 999_999)) == (404, "bed_not_found")
    assert error(admit(api_client, bob, "x")) == (400, "invalid")
    missing = api_client.post(f"/api/patients/{uuid.uuid4()}/admit/", {"bed": 1}, format="json")
    assert error(missing) == (404, "patient_not_found")
    assert Admission.objects.count() == 1
    assert AuditEvent.objects.count() == 1


def test_a_viewer_may_not_admit_transfer_or_discharge(viewer_client, unit) -> None:
    patient = PatientFactory()
    for action in ("admit", "transfer", "discharge"):
        response = viewer_client.post(
            f"/api/patients/{patient.uuid}/{action}/", {"bed": bed(unit, "A1").pk}, format="json"
        )
        assert error(response) == (403, "permission_denied")
    assert not Admission.objects.exists()


def test_transfer_ends_the_admission_and_opens_one_to_the_new_bed(api_client, unit) -> None:
    patient = PatientFactory(name="ann")
    first_id = admit(api_client, patient, bed(unit, "A1").pk).json()["id"]

    response = api_client.post(
        f"/api/patients/{patient.uuid}/transfer/", {"bed": bed(unit, "A3").pk}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["bed"] == {"id": bed(unit, "A3").pk, "label": "A3", "unit": "icu-a"}
    first, second = Admission.objects.order_by("id")
    assert (first.pk, first.end_reason, first.discharged_at) == (
        first_id,
        "transfer",
        second.admitted_at,
    )
    assert (second.bed.label, second.discharged_at) == ("A3", None)
    transfer = AuditEvent.objects.get(action="patient.transfer")
    assert (transfer.before["bed"], transfer.after["bed"]) == ("A1", "A3")


def test_transfer_and_discharge_of_a_patient_in_no_bed_are_refused(api_client, unit) -> None:
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    admit(api_client, bob, bed(unit, "A2").pk)
    url = f"/api/patients/{ann.uuid}"

    assert error(api_client.post(f"{url}/transfer/", {"bed": bed(unit, "A1").pk})) == (
        409,
        "not_admitted",
    )
    assert error(api_client.post(f"{url}/discharge/", {})) == (409, "not_admitted")
    admit(api_client, ann, bed(unit, "A1").pk)
    # Into an occupied bed, or their own: refused, the admission left open.
    for label in ("A2", "A1"):
        refused = api_client.post(f"{url}/transfer/", {"bed": bed(unit, label).pk})
        assert error(refused) == (409, "bed_occupied")
    assert Admission.objects.get(patient=ann).discharged_at is None


def test_discharge_resolves_the_alarms_ends_monitoring_and_keeps_the_history(
    api_client, unit
) -> None:
    patient = PatientFactory(name="ann")
    PatientMetricFactory(patient=patient, received_at=timezone.now() - timedelta(hours=1))
    spo2 = AlarmFactory(patient=patient)
    no_data = AlarmFactory(patient=patient, kind="no_data", state="acknowledged")
    old = AlarmFactory(patient=patient, kind="pulse_high", state="resolved")
    admit(api_client, patient, bed(unit, "A1").pk)

    response = api_client.post(
        f"/api/patients/{patient.uuid}/discharge/", {"reason": "to ward 7"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["end_reason"], body["discharge_reason"], body["discharged_by"]) == (
        "discharge",
        "to ward 7",
        "nurse",
    )
    assert body["discharged_at"] is not None
    for alarm in (spo2, no_data):
        alarm.refresh_from_db()
        assert alarm.state == "resolved"
        event = AlarmEvent.objects.filter(alarm=alarm).get()
        assert (event.type, event.payload["reason"]) == ("resolved", "discharged")
    assert not AlarmEvent.objects.filter(alarm=old).exists()
    patient.refresh_from_db()
    assert patient.monitoring_ended_at is not None
    # The monitor taken off raises nothing.
    assert alarm_no_data_sweep(silent_for=timedelta(seconds=15)) == []
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "patient.admit",
        "patient.discharge",
        "patient.monitoring_end",
    ]
    discharge = AuditEvent.objects.get(action="patient.discharge")
    assert discharge.after["alarms_resolved"] == sorted([spo2.pk, no_data.pk])
    # Out of the unit, still in the API.
    assert api_client.get("/api/patients/?unit=icu-a").json()["results"] == []
    assert api_client.get(f"/api/patients/{patient.uuid}/").status_code == 200
    assert Alarm.objects.filter(patient=patient).count() == 3


def test_admitted_again_the_patient_is_monitored_again(api_client, unit) -> None:
    patient = PatientFactory(name="ann")
    admit(api_client, patient, bed(unit, "A1").pk)
    api_client.post(f"/api/patients/{patient.uuid}/discharge/", {})

    assert admit(api_client, patient, bed(unit, "A2").pk).status_code == 201

    patient.refresh_from_db()
    assert (patient.monitoring_ended_at, patient.monitoring_ended_by) == (None, None)
    assert list(Admission.objects.order_by("id").values_list("bed__label", "end_reason")) == [
        ("A1", "discharge"),
        ("A2", ""),
    ]


def test_unit_filters_the_patient_and_alarm_lists(api_client, unit) -> None:
    other = Unit.objects.create(code="hdu", name="HDU")
    other.beds.create(label="H1", position=1)
    ann, bob, cid = (PatientFactory(name=n) for n in ("ann", "bob", "cid"))
    admit(api_client, ann, bed(unit, "A1").pk)
    admit(api_client, bob, other.beds.get().pk)
    alarms = {p.name: AlarmFactory(patient=p) for p in (ann, bob, cid)}

    names = [p["name"] for p in api_client.get("/api/patients/?unit=icu-a").json()["results"]]
    hdu = [a["id"] for a in api_client.get("/api/alarms/?unit=hdu").json()["results"]]
    assert names == ["ann"]
    assert hdu == [alarms["bob"].pk]
    assert api_client.get("/api/patients/?unit=nowhere").json()["results"] == []
    bad = api_client.get("/api/alarms/?unit=no%20unit")
    assert error(bad) == (400, "invalid")


@pytest.mark.django_db(transaction=True)
def test_two_patients_admitted_to_one_bed_at_once_one_wins(api_client, unit) -> None:
    """Each thread its own connection: the database's one-open-admission-per-bed decides."""
    patients = [PatientFactory(name="ann"), PatientFactory(name="bob")]
    a1 = bed(unit, "A1")
    twin = APIClient()
    twin.credentials(**api_client._credentials)  # the same nurse, a client of its own
    clients = [api_client, twin]
    start = threading.Barrier(2)
    answers: list = [None, None]

    def admit_one(i: int) -> None:
        try:
            start.wait(timeout=10)
            answers[i] = admit(clients[i], patients[i], a1.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=admit_one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(a.status_code for a in answers) == [201, 409]
    loser = next(a for a in answers if a.status_code == 409)
    assert loser.json()["error"]["code"] == "bed_occupied"
    assert Admission.objects.filter(bed=a1, discharged_at__isnull=True).count() == 1
    assert AuditEvent.objects.filter(action="patient.admit").count() == 1


@pytest.mark.parametrize(
    ("holder", "code"), [("other_patient", "bed_occupied"), ("same_patient", "already_admitted")]
)
def test_the_database_decides_a_race_lost_after_the_checks(
    api_client, unit, monkeypatch, holder: str, code: str
) -> None:
    """The admission that gets past the checks as another commits meets the unique index: its
    IntegrityError is the 409, the transaction rolled back."""
    ann = PatientFactory(name="ann")
    occupant = PatientFactory(name="bob") if holder == "other_patient" else ann
    target = bed(unit, "A1") if holder == "other_patient" else bed(unit, "A2")
    admit(api_client, occupant, bed(unit, "A1").pk)
    # As if the other admission committed just after these checks read.
    monkeypatch.setattr("units.services._admission_check", lambda **kwargs: None)

    assert error(admit(api_client, ann, target.pk)) == (409, code)
    assert Admission.objects.filter(discharged_at__isnull=True).count() == 1
    assert AuditEvent.objects.filter(action="patient.admit").count() == 1
