"""NEWS2 in the API, acuity ordering, alarms and alarm limits, through the HTTP API."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from patients.models import Patient
from patients.tests.factories import PatientFactory
from vitals.contract import Reading
from vitals.models import Alarm, AlarmEvent, AlarmLimits
from vitals.services import reading_bulk_store
from vitals.tests.factories import AlarmFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def store(name: str, seconds: int = 0, **values) -> Patient:
    patient_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, name)
    reading = {
        "pulse": 72,
        "resp_rate": 14,
        "systolic": 120,
        "diastolic": 80,
        "spo2": 98,
        "temperature": 36.8,
        **values,
    }
    reading_bulk_store(
        readings=[
            Reading(
                patient_uuid=patient_uuid,
                patient_name=name,
                measured_at=T0 + timedelta(seconds=seconds),
                **reading,
            )
        ]
    )
    return Patient.objects.get(uuid=patient_uuid)


SEPTIC = {
    "resp_rate": 24,
    "spo2": 93,
    "systolic": 98,
    "diastolic": 60,
    "pulse": 118,
    "temperature": 38.6,
}


def test_every_metric_carries_its_news2(api_client):
    patient = store("ann", **SEPTIC)
    body = api_client.get(f"/api/patients/{patient.uuid}/metrics/").json()
    assert body["results"][0]["news2"] == {
        "score": 9,
        "risk": "high",
        "subscores": {
            "resp_rate": 2,
            "spo2": 2,
            "on_oxygen": 0,
            "systolic": 2,
            "pulse": 2,
            "consciousness": 0,
            "temperature": 1,
        },
        "complete": True,
        "missing": [],
    }
    assert (body["results"][0]["on_oxygen"], body["results"][0]["consciousness"]) == (False, "A")


def test_hypercapnic_patients_are_scored_on_spo2_scale_2(api_client):
    patient = PatientFactory(
        uuid=uuid.uuid5(uuid.NAMESPACE_DNS, "copd"),
        name="copd",
        hypercapnic_respiratory_failure=True,
    )
    store("copd", spo2=89)  # scale 1: 3 points; scale 2 (target 88-92): 0
    news2 = api_client.get(f"/api/patients/{patient.uuid}/").json()["news2"]
    assert news2["subscores"]["spo2"] == 0
    assert news2 == {
        "score": 0,
        "risk": "low",
        "subscores": news2["subscores"],
        "complete": True,
        "missing": [],
    }


def test_an_artefact_reading_is_not_scored(api_client):
    patient = store("art", spo2=0, artefact="spo2_probe_off")
    metric = api_client.get(f"/api/patients/{patient.uuid}/metrics/").json()["results"][0]
    assert (metric["artefact"], metric["news2"]) == ("spo2_probe_off", None)


def test_patient_list_carries_latest_news2_and_orders_by_acuity(api_client):
    store("calm")
    store("sick", **SEPTIC)
    store("worried", resp_rate=22, pulse=95)  # 2 + 1 = 3
    PatientFactory(name="new-bed")  # no reading yet: last either way

    by_acuity = api_client.get("/api/patients/?ordering=-news2").json()["results"]
    assert [(p["name"], p["news2"] and p["news2"]["score"]) for p in by_acuity] == [
        ("sick", 9),
        ("worried", 3),
        ("calm", 0),
        ("new-bed", None),
    ]
    ascending = api_client.get("/api/patients/?ordering=news2").json()["results"]
    assert [p["name"] for p in ascending] == ["calm", "worried", "sick", "new-bed"]
    assert api_client.get("/api/patients/?ordering=age").json()["error"] == {
        "status": 400,
        "code": "invalid_parameter",
        "message": "'age' is not an ordering; use one of name, -name, news2, -news2.",
    }


def make_alarm(patient: Patient, kind: str = "spo2_low", priority: str = "medium", **kw) -> Alarm:
    return AlarmFactory(
        patient=patient, kind=kind, priority=priority, message=f"{kind} alarm", value=85, **kw
    )


def test_alarm_list_filters_by_patient_kind_state_and_priority(api_client):
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    a1 = make_alarm(ann, "spo2_low", "high", raised_at=T0)
    a2 = make_alarm(
        ann, "pulse_high", "medium", raised_at=T0 + timedelta(minutes=1), state="resolved"
    )
    b1 = make_alarm(
        bob, "news2", "medium", raised_at=T0 + timedelta(minutes=2), state="acknowledged"
    )

    def ids(query: str) -> list[int]:
        response = api_client.get(f"/api/alarms/{query}")
        assert response.status_code == 200, response.json()
        return [a["id"] for a in response.json()["results"]]

    assert ids("") == [b1.pk, a2.pk, a1.pk]
    assert ids(f"?patient={ann.uuid}") == [a2.pk, a1.pk]
    assert ids("?state=active,acknowledged") == [b1.pk, a1.pk]
    assert ids("?state=active&state=acknowledged") == [b1.pk, a1.pk]
    assert ids("?priority=high") == [a1.pk]
    assert ids("?kind=news2,spo2_low") == [b1.pk, a1.pk]
    assert ids("?kind=pulse_high&state=active") == []
    assert ids(f"?patient={bob.uuid}&priority=high") == []
    bad = api_client.get("/api/alarms/?state=snoozed").json()["error"]
    assert (bad["status"], bad["code"]) == (400, "invalid")
    assert "snoozed" in bad["fields"]["state"][0]
    bad_kind = api_client.get("/api/alarms/?kind=pulse").json()["error"]
    assert bad_kind["fields"] == {"kind": ['"pulse" is not a valid choice.']}
    assert api_client.get(f"/api/alarms/?patient={uuid.uuid4()}").status_code == 404


def test_alarm_body(api_client):
    alarm = make_alarm(PatientFactory(name="ann"))
    body = api_client.get(f"/api/alarms/{alarm.pk}/").json()
    assert body == {
        "id": alarm.pk,
        "patient": str(alarm.patient.uuid),
        "patient_name": "ann",
        "kind": "spo2_low",
        "priority": "medium",
        "state": "active",
        "message": "spo2_low alarm",
        "value": 85.0,
        "threshold": 90.0,
        "raised_at": "2026-11-23T08:00:00Z",
        "activated_at": None,
        "escalated_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "acknowledged_priority": None,
        "acknowledged_message": "",
        "resolved_at": None,
        "acknowledge_url": f"http://testserver/api/alarms/{alarm.pk}/acknowledge/",
        "history": [],
    }
    assert api_client.get("/api/alarms/999999/").json()["error"]["code"] == "alarm_not_found"
    assert api_client.get("/api/alarms/abc/").json()["error"]["code"] == "alarm_not_found"


def test_acknowledge_records_who_and_when_once_and_goes_to_the_outbox(api_client, user):
    alarm = make_alarm(PatientFactory(name="ann"))

    response = api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "nurse")
    alarm.refresh_from_db()
    assert alarm.acknowledged_by == user
    first_ack = alarm.acknowledged_at
    assert first_ack is not None
    [event] = AlarmEvent.objects.filter(alarm=alarm)
    assert (event.type, event.published_at) == ("acknowledged", None)
    assert event.payload["alarm"]["acknowledged_by"] == "nurse"
    assert event.payload["patient"] == {"uuid": str(alarm.patient.uuid), "name": "ann"}

    again = api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")
    assert again.status_code == 200
    alarm.refresh_from_db()
    assert alarm.acknowledged_at == first_ack
    assert AlarmEvent.objects.filter(alarm=alarm).count() == 1


def test_a_resolved_alarm_cannot_be_acknowledged(api_client):
    alarm = make_alarm(PatientFactory(name="ann"), state="resolved", resolved_at=T0)
    response = api_client.post(f"/api/alarms/{alarm.pk}/acknowledge/")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "status": 409,
        "code": "alarm_not_open",
        "message": f"Alarm {alarm.pk} is already resolved.",
    }


def test_an_acknowledgement_names_the_priority_shown_and_is_refused_when_the_alarm_is_worse(
    api_client,
):
    """The page posts the priority it showed: an alarm now above it (worse meanwhile) is not
    acknowledged (409 alarm_changed, the alarm left active); the same or below is; an unknown
    priority is a 400."""
    ann = PatientFactory(name="ann")
    high = make_alarm(ann, priority="high")
    url = f"/api/alarms/{high.pk}/acknowledge/"

    refused = api_client.post(url, {"priority": "medium"}, format="json")

    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "status": 409,
        "code": "alarm_changed",
        "message": f"Alarm {high.pk} is HIGH now, not MEDIUM as shown: spo2_low alarm. "
        "Look at it again before acknowledging it.",
    }
    high.refresh_from_db()
    assert (high.state, high.acknowledged_at) == ("active", None)
    assert not AlarmEvent.objects.filter(alarm=high).exists()

    bad = api_client.post(url, {"priority": "urgent"}, format="json")
    assert (bad.status_code, bad.json()["error"]["fields"]) == (
        400,
        {"priority": ['"urgent" is not a valid choice.']},
    )

    acknowledged = api_client.post(url, {"priority": "high"}, format="json")
    assert (acknowledged.status_code, acknowledged.json()["acknowledged_priority"]) == (200, "high")
    # Shown high, lowered to medium since: acknowledged (the nurse saw worse).
    medium = make_alarm(PatientFactory(name="bob"), kind="pulse_high", priority="medium")
    lower = api_client.post(
        f"/api/alarms/{medium.pk}/acknowledge/", {"priority": "high"}, format="json"
    )
    assert (lower.status_code, lower.json()["state"]) == (200, "acknowledged")


def test_anonymous_users_cannot_see_or_acknowledge_alarms(anon_client):
    alarm = make_alarm(PatientFactory(name="ann"))
    assert anon_client.get("/api/alarms/").status_code == 401
    assert anon_client.post(f"/api/alarms/{alarm.pk}/acknowledge/").status_code == 401
    alarm.refresh_from_db()
    assert alarm.state == "active"


DEFAULTS = {
    "spo2_low": 90,
    "pulse_low": 50,
    "pulse_high": 120,
    "systolic_low": 90,
    "systolic_high": 160,
    "diastolic_low": 50,
    "diastolic_high": 90,
    "resp_rate_low": 8,
    "resp_rate_high": 30,
    "temperature_low": 35.0,
    "temperature_high": 39.0,
    "map_low": 65,
    "map_high": 110,
    "etco2_low": 25,
    "etco2_high": 50,
    "delay_readings": 2,
}


def test_alarm_limits_default_to_the_bedside_values(api_client):
    patient = PatientFactory(name="ann")
    body = api_client.get(f"/api/patients/{patient.uuid}/alarm-limits/").json()
    assert body == {**DEFAULTS, "updated_at": None, "updated_by": None}
    assert not AlarmLimits.objects.exists()


def test_the_map_and_etco2_limits_are_set_and_checked_like_the_others(api_client):
    patient = PatientFactory(name="ann")
    url = f"/api/patients/{patient.uuid}/alarm-limits/"

    response = api_client.patch(url, {"map_low": 70, "etco2_high": 60}, format="json")
    assert response.status_code == 200, response.json()
    assert {k: response.json()[k] for k in ("map_low", "map_high", "etco2_low", "etco2_high")} == {
        "map_low": 70,
        "map_high": 110,
        "etco2_low": 25,
        "etco2_high": 60,
    }
    limits = AlarmLimits.objects.get(patient=patient)
    assert (limits.map_low, limits.etco2_high) == (70, 60)

    crossed = api_client.patch(url, {"map_low": 90, "map_high": 90}, format="json")
    assert crossed.json()["error"]["fields"] == {
        "map_high": ["'map_high' must be above 'map_low' (90)."]
    }
    # The settable ranges of vitals/signs.py: MAP low 50-90, EtCO2 high 40-80.
    out_of_range = api_client.patch(url, {"map_low": 45, "etco2_high": 81}, format="json")
    assert out_of_range.json()["error"]["fields"] == {
        "map_low": ["Ensure this value is greater than or equal to 50."],
        "etco2_high": ["Ensure this value is less than or equal to 80."],
    }
    limits.refresh_from_db()
    assert (limits.map_low, limits.map_high, limits.etco2_high) == (70, 110, 60)


def test_put_replaces_patch_changes_and_both_validate(api_client):
    patient = PatientFactory(name="ann")
    url = f"/api/patients/{patient.uuid}/alarm-limits/"

    response = api_client.put(url, {**DEFAULTS, "pulse_high": 140, "spo2_low": 88}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["pulse_high"], response.json()["updated_by"]) == (140, "nurse")
    limits = AlarmLimits.objects.get(patient=patient)
    assert (limits.pulse_high, limits.spo2_low, limits.updated_by.username) == (140, 88, "nurse")

    incomplete = api_client.put(url, {"pulse_high": 150}, format="json")
    assert incomplete.status_code == 400
    assert incomplete.json()["error"]["fields"]["spo2_low"] == ["This field is required."]

    patched = api_client.patch(url, {"delay_readings": 3}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["delay_readings"], patched.json()["pulse_high"]) == (3, 140)

    crossed = api_client.patch(url, {"pulse_low": 90, "pulse_high": 80}, format="json")
    assert crossed.status_code == 400
    assert crossed.json()["error"]["fields"] == {
        "pulse_high": ["'pulse_high' must be above 'pulse_low' (90)."]
    }
    out_of_range = api_client.patch(url, {"delay_readings": 0, "spo2_low": 101}, format="json")
    assert out_of_range.status_code == 400
    assert set(out_of_range.json()["error"]["fields"]) == {"delay_readings", "spo2_low"}
    limits.refresh_from_db()
    assert (limits.pulse_low, limits.delay_readings, limits.spo2_low) == (50, 3, 88)


def test_alarm_limits_of_an_unknown_patient_are_404(api_client):
    response = api_client.get(f"/api/patients/{uuid.uuid4()}/alarm-limits/")
    assert response.json()["error"]["code"] == "patient_not_found"
