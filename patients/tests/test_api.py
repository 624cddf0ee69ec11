"""The patient and metrics API: authentication, shapes, filters, pagination, errors, schema."""

import io
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import factory
import pytest
import yaml
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from core.exceptions import InvalidParameter
from patients.models import Patient
from patients.tests.factories import PatientFactory
from patients.tests.ward import tiles_stale, ward_fast_and_slow
from units.models import Bed, Unit
from units.services import admission_create
from vitals.contract import Reading
from vitals.models import PatientMetric
from vitals.news2 import news2_score
from vitals.patient_selectors import (
    PATIENT_ORDERINGS,
    ReadingPage,
    TilePage,
    _reading_page_sql,
    _tile_page_sql,
)
from vitals.serializers import ReadingSerializer
from vitals.services import alarm_switch_off, patient_monitoring_end, reading_bulk_store
from vitals.signs import SIGN_KEYS
from vitals.tests.factories import T0, AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db

RECEIVED = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
MISSING_UUID = "00000000-0000-4000-8000-000000000000"
NOT_AUTHENTICATED = {
    "error": {
        "status": 401,
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
    }
}

# Every endpoint; {uuid} is filled with an existing patient's uuid where that matters.
ENDPOINTS = [
    "/api/",
    "/api/patients/",
    "/api/patients/{uuid}/",
    "/api/patients/{uuid}/metrics/",
    "/api/patients/{uuid}/trend/",
    "/api/patients",
    "/api/patient/{uuid}/metrics",
    "/api/schema/",
    "/api/docs/",
]


def iso(value: datetime) -> str:
    """A datetime as the API renders it."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def reading(patient_uuid: uuid.UUID, name: str, minute: int, **values) -> Reading:
    fields = {
        "pulse": 72,
        "resp_rate": 14,
        "systolic": 120,
        "diastolic": 80,
        "spo2": 98,
        "temperature": 36.8,
    }
    fields.update(values)
    return Reading(
        patient_uuid=patient_uuid,
        patient_name=name,
        measured_at=T0 + timedelta(minutes=minute),
        **fields,
    )


def store(*readings: Reading) -> None:
    """Store through the consumer's own service, which keeps `latest_metric` up to date."""
    reading_bulk_store(readings=list(readings), received_at=RECEIVED)


def reading_body(minute: int, **values) -> dict:
    body = {
        "measured_at": iso(T0 + timedelta(minutes=minute)),
        "pulse": 72,
        "resp_rate": 14,
        "bp": "120/80",
        "systolic": 120,
        "diastolic": 80,
        "map": None,
        "spo2": 98,
        "temperature": 36.8,
        "etco2": None,
        "on_oxygen": False,
        "consciousness": "A",
        "artefact": "",
        "news2": None,
        "received_at": "2026-11-23T09:30:00Z",
        "sent_at": None,
        "clock_offset_s": None,
    }
    body.update(values)
    if "systolic" in values or "diastolic" in values:
        body["bp"] = f"{body['systolic']}/{body['diastolic']}"
    if "news2" not in values:
        # Computed by the NEWS2 module, itself checked edge by edge in vitals/tests/test_news2.py.
        score = news2_score(
            **{k: body[k] for k in NEWS2_INPUTS}, on_oxygen=False, consciousness="A"
        )
        body["news2"] = {
            "score": score.score,
            "risk": score.risk,
            "subscores": score.subscores,
            "complete": True,
            "missing": [],
        }
    return body


NEWS2_INPUTS = ("resp_rate", "spo2", "systolic", "pulse", "temperature")


def patient_body(patient: Patient, latest: dict | None) -> dict:
    patient.refresh_from_db()
    return {
        "uuid": str(patient.uuid),
        "name": patient.name,
        "mrn": patient.mrn,
        "mrn_authority": patient.mrn_authority,
        "name_conflicts": [],
        "url": f"http://testserver/api/patients/{patient.uuid}/",
        "metrics_url": f"http://testserver/api/patients/{patient.uuid}/metrics/",
        "alarm_limits_url": f"http://testserver/api/patients/{patient.uuid}/alarm-limits/",
        "hypercapnic_respiratory_failure": False,
        "monitoring_ended_at": None,
        "monitoring_ended_by": None,
        "monitoring_end_url": f"http://testserver/api/patients/{patient.uuid}/monitoring/end/",
        "created_at": iso(patient.created_at),
        "updated_at": iso(patient.updated_at),
        "news2": latest and latest["news2"],
        "active_alarms": [],
        "alarms_off": [],
        "latest_metric": latest,
        "latest_signs": patient.latest_signs,
    }


def measured(response) -> list[str]:
    return [m["measured_at"] for m in response.json()["results"]]


def at(minute: int) -> str:
    return iso(T0 + timedelta(minutes=minute))


@pytest.fixture
def patient() -> Patient:
    """A patient with five readings, one a minute from T0, pulse 60..64."""
    patient_uuid = uuid.UUID("11111111-1111-4111-8111-111111111111")
    store(*(reading(patient_uuid, "Alice", minute, pulse=60 + minute) for minute in range(5)))
    return Patient.objects.get(uuid=patient_uuid)


def metrics_url(patient: Patient) -> str:
    return f"/api/patients/{patient.uuid}/metrics/"


# --- Authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_anonymous_gets_401_in_the_error_shape(anon_client: APIClient, path: str) -> None:
    response = anon_client.get(path.format(uuid=MISSING_UUID))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json() == NOT_AUTHENTICATED
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bad_token_gets_401(anon_client: APIClient, path: str) -> None:
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = anon_client.get(path.format(uuid=MISSING_UUID))

    assert response.status_code == 401
    assert response.json() == {
        "error": {"status": 401, "code": "authentication_failed", "message": "Invalid token."}
    }
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_token_auth_opens_every_endpoint(
    api_client: APIClient, patient: Patient, path: str
) -> None:
    response = api_client.get(path.format(uuid=patient.uuid))

    assert response.status_code == 200


def test_session_auth_with_login(client, user, patient: Patient) -> None:
    # Through a login door (django-axes watches them; Client.login() has no request to show).
    login = client.post("/api/auth/login/", {"username": "nurse", "password": "correct-horse-9"})
    assert login.status_code == 302

    response = client.get("/api/patients/")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["Alice"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/",
        "/api/patients/",
        "/api/patients/{uuid}/",
        "/api/patients/{uuid}/metrics/",
        "/api/patients",
        "/api/patient/{uuid}/metrics",
    ],
)
def test_session_auth_browsable_api_html(client, user, patient: Patient, path: str) -> None:
    client.force_login(user)

    response = client.get(path.format(uuid=patient.uuid), HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    content = response.content.decode()
    assert content.lstrip().startswith("<!DOCTYPE html>")
    assert "nurse" in content  # the logged-in user's menu


def test_token_endpoint_returns_the_users_token(anon_client: APIClient, user) -> None:
    response = anon_client.post(
        "/api/auth/token/", {"username": "nurse", "password": "correct-horse-9"}
    )

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}
    # The token it hands out opens the API.
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert anon_client.get("/api/patients/").status_code == 200


def test_token_endpoint_returns_an_existing_token(anon_client: APIClient, user) -> None:
    token = Token.objects.create(user=user)

    response = anon_client.post(
        "/api/auth/token/", {"username": "nurse", "password": "correct-horse-9"}
    )

    assert response.json() == {"token": token.key}
    assert Token.objects.filter(user=user).count() == 1


def test_token_endpoint_wrong_password(anon_client: APIClient, user) -> None:
    response = anon_client.post("/api/auth/token/", {"username": "nurse", "password": "wrong"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {"non_field_errors": ["Unable to log in with provided credentials."]},
        }
    }
    assert not Token.objects.filter(user=user).exists()


# --- Patient list -------------------------------------------------------------------------------


def test_patient_list_shape(api_client: APIClient) -> None:
    bob_uuid = uuid.uuid4()
    # The latest reading is the one received last, whatever its stamp.
    store(
        reading(bob_uuid, "Bob", 0, pulse=70),
        reading(bob_uuid, "Bob", 3, pulse=80),
        reading(bob_uuid, "Bob", 2, pulse=90, systolic=135, diastolic=85, spo2=94),
    )
    bob = Patient.objects.get(uuid=bob_uuid)
    carol = PatientFactory(name="Carol")

    response = api_client.get("/api/patients/")

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [
            patient_body(bob, reading_body(2, pulse=90, systolic=135, diastolic=85, spo2=94)),
            patient_body(carol, None),
        ],
    }


def test_patient_list_filtered_by_mrn_and_its_authority(api_client: APIClient) -> None:
    """`?mrn=` exact (PID-3.1 from the device gateway), `mrn_authority=` narrowing it."""
    ann = PatientFactory(name="Ann", mrn="MRN1", mrn_authority="HOSP")
    other = PatientFactory(name="Ann B", mrn="MRN1", mrn_authority="CLINIC")
    PatientFactory(name="Bob", mrn="MRN12", mrn_authority="HOSP")
    PatientFactory(name="Monitor only")

    both = api_client.get("/api/patients/", {"mrn": "MRN1"})
    hosp = api_client.get("/api/patients/", {"mrn": "MRN1", "mrn_authority": "HOSP"})
    none = api_client.get("/api/patients/", {"mrn": "mrn1"})
    detail = api_client.get(f"/api/patients/{ann.uuid}/")

    assert both.status_code == 200
    assert both.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [patient_body(ann, None), patient_body(other, None)],
    }
    assert [(p["name"], p["mrn"], p["mrn_authority"]) for p in hosp.json()["results"]] == [
        ("Ann", "MRN1", "HOSP")
    ]
    assert none.json()["count"] == 0
    assert detail.json() == patient_body(ann, None)


def test_patient_list_ordered_by_name_then_uuid(api_client: APIClient) -> None:
    PatientFactory(name="Carol")
    PatientFactory(name="Dan", uuid=uuid.UUID("ffffffff-ffff-4fff-8fff-ffffffffffff"))
    PatientFactory(name="Alice")
    PatientFactory(name="Dan", uuid=uuid.UUID("00000000-0000-4000-8000-000000000001"))
    PatientFactory(name="Bob")

    results = api_client.get("/api/patients/").json()["results"]

    assert [p["name"] for p in results] == ["Alice", "Bob", "Carol", "Dan", "Dan"]
    assert [p["uuid"] for p in results[3:]] == [
        "00000000-0000-4000-8000-000000000001",
        "ffffffff-ffff-4fff-8fff-ffffffffffff",
    ]


def test_patient_list_page_number_pagination(api_client: APIClient) -> None:
    for name in ["E", "D", "C", "B", "A"]:
        PatientFactory(name=name)

    first = api_client.get("/api/patients/", {"page_size": 2}).json()
    second = api_client.get(first["next"]).json()
    last = api_client.get(second["next"]).json()

    assert first["count"] == 5
    assert [p["name"] for p in first["results"]] == ["A", "B"]
    assert first["next"] == "http://testserver/api/patients/?page=2&page_size=2"
    assert first["previous"] is None
    assert [p["name"] for p in second["results"]] == ["C", "D"]
    assert second["previous"] == "http://testserver/api/patients/?page_size=2"
    assert [p["name"] for p in last["results"]] == ["E"]
    assert last["next"] is None


def test_patient_list_default_and_max_page_size(api_client: APIClient) -> None:
    Patient.objects.bulk_create(Patient(name=f"p-{n:04d}") for n in range(501))

    default = api_client.get("/api/patients/").json()
    capped = api_client.get("/api/patients/", {"page_size": 1000}).json()

    assert default["count"] == 501
    assert len(default["results"]) == 50
    assert len(capped["results"]) == 500
    assert capped["results"][-1]["name"] == "p-0499"
    assert capped["next"] == "http://testserver/api/patients/?page=2&page_size=1000"


def test_patient_list_page_out_of_range(api_client: APIClient) -> None:
    PatientFactory()

    response = api_client.get("/api/patients/", {"page": 9})

    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "code": "not_found", "message": "Invalid page."}
    }


@pytest.mark.parametrize("count", [3, 30])
def test_patient_list_query_count_is_constant(
    api_client: APIClient, django_assert_num_queries, count: int
) -> None:
    store(*(reading(uuid.uuid4(), f"p-{n:02d}", n) for n in range(count)))
    PatientFactory(name="zz-no-readings", mrn="MRN9", mrn_authority="HOSP")
    for patient in Patient.objects.all():  # every patient with an open alarm and one off
        AlarmFactory(patient=patient)
        alarm_switch_off(patient=patient, kind="pulse_high", reason="paced", user=None)

    # The token with its user's permissions (core.selectors.token_get), COUNT(*), one SELECT of
    # patients joined to their tiles (the ward's snapshot, which alarm_switch_off wrote).
    with django_assert_num_queries(3):
        response = api_client.get("/api/patients/")
    with django_assert_num_queries(3):  # the MRN filter too
        by_mrn = api_client.get("/api/patients/", {"mrn": "MRN9", "mrn_authority": "HOSP"})
    assert [p["name"] for p in by_mrn.json()["results"]] == ["zz-no-readings"]

    results = response.json()["results"]
    assert len(results) == count + 1
    assert [p["latest_metric"]["measured_at"] for p in results[:count]] == [
        at(n) for n in range(count)
    ]
    assert results[-1]["latest_metric"] is None
    assert [len(p["active_alarms"]) for p in results] == [1] * (count + 1)
    assert {(a["kind"], a["reason"]) for p in results for a in p["alarms_off"]} == {
        ("pulse_high", "paced")
    }
    assert [len(p["alarms_off"]) for p in results] == [1] * (count + 1)


# --- Patient detail -----------------------------------------------------------------------------


def test_patient_detail(api_client: APIClient, patient: Patient) -> None:
    response = api_client.get(f"/api/patients/{patient.uuid}/")

    assert response.status_code == 200
    assert response.json() == patient_body(patient, reading_body(4, pulse=64))


def test_patient_detail_without_readings(api_client: APIClient) -> None:
    patient = PatientFactory(name="New")

    response = api_client.get(f"/api/patients/{patient.uuid}/")

    assert response.json() == patient_body(patient, None)


def test_patient_detail_accepts_an_uppercase_uuid(api_client: APIClient, patient) -> None:
    response = api_client.get(f"/api/patients/{str(patient.uuid).upper()}/")

    assert response.status_code == 200
    assert response.json()["uuid"] == str(patient.uuid)


@pytest.mark.parametrize(
    "path",
    ["/api/patients/{uuid}/", "/api/patients/{uuid}/metrics/", "/api/patient/{uuid}/metrics"],
)
def test_unknown_patient_is_404(api_client: APIClient, patient: Patient, path: str) -> None:
    response = api_client.get(path.format(uuid=MISSING_UUID))

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "status": 404,
            "code": "patient_not_found",
            "message": f"No patient with uuid {MISSING_UUID}.",
        }
    }


@pytest.mark.parametrize("value", ["not-a-uuid", "123", "11111111-1111-4111-8111-11111111111z"])
@pytest.mark.parametrize(
    "path",
    ["/api/patients/{uuid}/", "/api/patients/{uuid}/metrics/", "/api/patient/{uuid}/metrics"],
)
def test_malformed_uuid_is_400(api_client: APIClient, patient, path: str, value: str) -> None:
    response = api_client.get(path.format(uuid=value))

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "invalid_parameter",
            "message": f"'{value}' is not a valid patient uuid.",
        }
    }


# --- Metrics ------------------------------------------------------------------------------------


@pytest.fixture
def unscored(monkeypatch) -> None:
    """Readings served without their NEWS2 (null), which vitals/tests/test_news2.py and
    test_alarm_api.py check: these tests are about the signs."""
    monkeypatch.setattr(PatientMetric, "news2", property(lambda metric: None))


def partial_readings(patient: Patient) -> list[PatientMetric]:
    """Contract version 2: pulse and SpO2 only; then MAP and EtCO2 without the cuff's."""
    absent = dict.fromkeys(("resp_rate", "systolic", "diastolic", "temperature"))
    return [
        PatientMetricFactory(patient=patient, measured_at=T0, pulse=88, spo2=95, **absent),
        PatientMetricFactory(
            patient=patient,
            measured_at=T0 + timedelta(minutes=1),
            systolic=None,
            diastolic=None,
            map=62,
            etco2=48,
        ),
    ]


def test_a_sign_not_measured_is_null_and_bp_unless_both_halves(api_client, unscored) -> None:
    patient = PatientFactory()
    partial_readings(patient)

    response = api_client.get(metrics_url(patient))

    common = {
        "on_oxygen": False,
        "consciousness": "A",
        "artefact": "",
        "news2": None,
        "sent_at": None,
        "clock_offset_s": None,
    }
    assert response.json()["results"] == [
        {
            "measured_at": "2026-11-23T08:01:00Z",
            "pulse": 72,
            "resp_rate": 14,
            "bp": None,
            "systolic": None,
            "diastolic": None,
            "map": 62,
            "spo2": 98,
            "temperature": 36.8,
            "etco2": 48,
            **common,
            "received_at": "2026-11-23T08:01:00.300000Z",
        },
        {
            "measured_at": "2026-11-23T08:00:00Z",
            "pulse": 88,
            "resp_rate": None,
            "bp": None,
            "systolic": None,
            "diastolic": None,
            "map": None,
            "spo2": 95,
            "temperature": None,
            "etco2": None,
            **common,
            "received_at": "2026-11-23T08:00:00.300000Z",
        },
    ]


def test_latest_signs_are_each_signs_newest_value_typed_in_the_schema(api_client) -> None:
    latest = {
        "pulse": {"value": 88, "measured_at": "2026-11-23T08:01:00Z"},
        "temperature": {"value": 37.9, "measured_at": "2026-11-23T07:40:00Z"},
        "consciousness": {"value": "A", "measured_at": "2026-11-23T07:40:00Z"},
        "on_oxygen": {"value": False, "measured_at": "2026-11-23T07:40:00Z"},
    }
    patient = PatientFactory(latest_signs=latest)

    assert api_client.get(f"/api/patients/{patient.uuid}/").json()["latest_signs"] == latest
    schemas = yaml.safe_load(api_client.get("/api/schema/").content)["components"]["schemas"]
    properties = schemas["LatestSigns"]["properties"]
    assert list(properties) == [*SIGN_KEYS, "consciousness", "on_oxygen"]
    assert schemas["LatestSigns"].get("required") is None
    assert properties["map"]["allOf"] == [{"$ref": "#/components/schemas/LatestWholeNumberSign"}]
    assert properties["temperature"]["allOf"] == [
        {"$ref": "#/components/schemas/LatestDecimalSign"}
    ]
    assert schemas["LatestDecimalSign"]["properties"]["value"]["type"] == "number"
    assert schemas["LatestOnOxygen"]["properties"]["value"]["type"] == "boolean"


def test_metrics_newest_first(api_client: APIClient, patient: Patient) -> None:
    store(reading(uuid.uuid4(), "Someone else", 2, pulse=150))

    response = api_client.get(metrics_url(patient))

    assert response.status_code == 200
    assert response.json() == {
        "next": None,
        "previous": None,
        "results": [reading_body(minute, pulse=60 + minute) for minute in [4, 3, 2, 1, 0]],
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": at(1), "until": at(3)}, [3, 2, 1]),
        ({"since": at(2), "until": at(2)}, [2]),
        ({"since": at(3)}, [4, 3]),
        ({"until": at(1)}, [1, 0]),
        ({"since": "2026-11-23T08:02:30Z"}, [4, 3]),
        ({"since": "2026-11-23T09:03:00+01:00"}, [4, 3]),
        ({"until": "2026-11-23T07:01:00-01:00"}, [1, 0]),
        ({"since": "2026-11-23T08:05:00Z"}, []),
    ],
)
def test_metrics_since_until_inclusive(
    api_client: APIClient, patient: Patient, params: dict, expected: list[int]
) -> None:
    response = api_client.get(metrics_url(patient), params)

    assert response.status_code == 200
    assert measured(response) == [at(minute) for minute in expected]


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-11-23T09:03:00 01:00",  # the '+' decoded to a space
        "since=2026-11-23T09:03:00+01:00",  # a raw '+' in the query string is a space
        "since=2026-11-23T09:03:00%2B01:00",  # correctly encoded
        "since=2026-11-23T09:03:00%200100",  # space and an offset without a colon
    ],
)
def test_metrics_since_unencoded_plus(api_client: APIClient, patient: Patient, query: str) -> None:
    response = api_client.get(f"{metrics_url(patient)}?{query}")

    assert response.status_code == 200
    assert measured(response) == [at(4), at(3)]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "2026-11-23T09:00:00 x"])
def test_metrics_malformed_time_is_400(api_client: APIClient, patient, value: str) -> None:
    response = api_client.get(metrics_url(patient), {"since": value, "until": at(3)})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400
    assert error["code"] == "invalid"
    assert error["message"] == "Invalid input."
    assert list(error["fields"]) == ["since"]
    assert error["fields"]["since"][0].startswith("Datetime has wrong format.")


def test_metrics_since_after_until_is_400(api_client: APIClient, patient: Patient) -> None:
    response = api_client.get(metrics_url(patient), {"since": at(3), "until": at(1)})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "invalid",
            "message": "Invalid input.",
            "fields": {"until": ["'until' must not be before 'since'."]},
        }
    }


def test_metrics_cursor_pagination_walks_every_reading_once(
    api_client: APIClient, patient: Patient
) -> None:
    pages = [api_client.get(metrics_url(patient), {"page_size": 2}).json()]
    while pages[-1]["next"]:
        assert urlsplit(pages[-1]["next"]).path == metrics_url(patient)
        pages.append(api_client.get(pages[-1]["next"]).json())

    assert [len(page["results"]) for page in pages] == [2, 2, 1]
    assert [m["measured_at"] for page in pages for m in page["results"]] == [
        at(minute) for minute in [4, 3, 2, 1, 0]
    ]
    assert pages[0]["previous"] is None
    assert pages[1]["previous"] is not None
    back = api_client.get(pages[1]["previous"]).json()
    assert [m["measured_at"] for m in back["results"]] == [at(4), at(3)]


def test_metrics_cursor_keeps_the_filters(api_client: APIClient, patient: Patient) -> None:
    first = api_client.get(metrics_url(patient), {"page_size": 2, "until": at(2)}).json()
    second = api_client.get(first["next"]).json()

    assert [m["measured_at"] for m in first["results"]] == [at(2), at(1)]
    assert [m["measured_at"] for m in second["results"]] == [at(0)]
    assert second["next"] is None


def test_metrics_invalid_cursor(api_client: APIClient, patient: Patient) -> None:
    """Every forgery: icu/tests/test_pagination.py."""
    response = api_client.get(metrics_url(patient), {"cursor": "garbage"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_a_patients_readings_are_read_with_the_patient_in_one_query(
    api_client: APIClient, patient: Patient, django_assert_num_queries
) -> None:
    """The page's query finds the patient by uuid (a subquery): two queries, the token's (with
    its user and their permissions, core.selectors.token_get) and the page's, as a client's
    raw SQL would; no query of the patient. It is read on its own only when the page is empty
    or the request fails, so that an unknown patient is a 404 before a 400 for its
    parameters, as before."""
    api_client.get(metrics_url(patient))  # the access log's row of this window written
    with django_assert_num_queries(2):
        response = api_client.get(metrics_url(patient))
    assert [m["pulse"] for m in response.json()["results"]] == [64, 63, 62, 61, 60]

    # After the page: the empty page of a patient with none in the window, 200.
    empty = {"since": iso(T0 + timedelta(hours=1))}
    with django_assert_num_queries(3):
        response = api_client.get(metrics_url(patient), empty)
    assert response.json() == {"next": None, "previous": None, "results": []}

    for params in ({}, {"cursor": "garbage"}, {"since": "yesterday"}, empty):
        response = api_client.get(f"/api/patients/{MISSING_UUID}/metrics/", params)
        assert response.status_code == 404, params
        assert response.json()["error"]["code"] == "patient_not_found"
    for params, code in (({"cursor": "garbage"}, "invalid_cursor"), ({"since": "x"}, "invalid")):
        response = api_client.get(metrics_url(patient), params)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code
    assert api_client.get("/api/patients/not-a-uuid/metrics/").json()["error"] == {
        "status": 400,
        "code": "invalid_parameter",
        "message": "'not-a-uuid' is not a valid patient uuid.",
    }


def test_metrics_of_a_patient_without_readings(api_client: APIClient) -> None:
    patient = PatientFactory()

    response = api_client.get(metrics_url(patient))

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


# --- The brief's paths --------------------------------------------------------------------------


def test_brief_patient_list_path(api_client: APIClient, patient: Patient) -> None:
    PatientFactory(name="Zed")

    brief = api_client.get("/api/patients")
    router = api_client.get("/api/patients/")

    assert brief.status_code == 200
    assert brief.json() == router.json()
    assert [p["name"] for p in brief.json()["results"]] == ["Alice", "Zed"]


@pytest.mark.parametrize("path", ["/api/patient/{uuid}/metrics", "/api/patient/{uuid}/metrics/"])
def test_brief_metrics_path(api_client: APIClient, patient: Patient, path: str) -> None:
    params = {"since": at(1)}

    brief = api_client.get(path.format(uuid=patient.uuid), params)
    router = api_client.get(metrics_url(patient), params)

    assert brief.status_code == 200
    assert brief.json()["results"] == router.json()["results"]
    assert measured(brief) == [at(4), at(3), at(2), at(1)]


def test_brief_metrics_path_paginates_with_a_cursor(api_client: APIClient, patient) -> None:
    first = api_client.get(f"/api/patient/{patient.uuid}/metrics", {"page_size": 3}).json()
    second = api_client.get(first["next"]).json()

    assert set(first) == {"next", "previous", "results"}
    assert measured_list(first) == [at(4), at(3), at(2)]
    assert measured_list(second) == [at(1), at(0)]


def measured_list(body: dict) -> list[str]:
    return [m["measured_at"] for m in body["results"]]


# --- Unknown paths and methods ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope/", "/api/nope", "/api/patients/{uuid}/nope/"])
def test_unknown_api_path_is_json_404(api_client: APIClient, patient, path: str) -> None:
    path = path.format(uuid=patient.uuid)

    response = api_client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {"status": 404, "code": "not_found", "message": f"No such resource: {path}"}
    }


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/patients/", "/api/patients/{uuid}/", "/api/patients"])
def test_patients_are_read_only(api_client: APIClient, patient, method: str, path: str) -> None:
    response = getattr(api_client, method)(path.format(uuid=patient.uuid), {"name": "Mallory"})

    assert response.status_code == 405
    assert response.json() == {
        "error": {
            "status": 405,
            "code": "method_not_allowed",
            "message": f'Method "{method.upper()}" not allowed.',
        }
    }
    assert Patient.objects.get().name == "Alice"


# --- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_schema(api_client: APIClient) -> None:
    response = api_client.get("/api/schema/")

    assert response.status_code == 200
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "ICU Monitor API"
    assert {
        "/api/patients/",
        "/api/patients/{patient_uuid}/",
        "/api/patients/{patient_uuid}/metrics/",
    } <= set(document["paths"])
    # The brief's paths are the same operations: described once.
    assert "/api/patients" not in document["paths"]
    assert not any(p.startswith("/api/patient/") for p in document["paths"])
    operation = document["paths"]["/api/patients/{patient_uuid}/metrics/"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"patient_uuid", "since", "until", "cursor", "page_size"} <= set(parameters)
    assert parameters["since"]["in"] == "query"
    assert parameters["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert parameters["until"]["schema"] == {"type": "string", "format": "date-time"}
    assert parameters["patient_uuid"]["schema"] == {"type": "string", "format": "uuid"}


def test_openapi_schema_as_json(api_client: APIClient) -> None:
    response = api_client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert "/api/patients/{patient_uuid}/metrics/" in response.json()["paths"]


def test_openapi_schema_generates_without_warnings(tmp_path) -> None:
    out = tmp_path / "s.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert "/api/patients/{patient_uuid}/metrics/" in yaml.safe_load(out.read_text())["paths"]


def test_swagger_docs_for_a_logged_in_user(client, user) -> None:
    client.force_login(user)

    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    # Its init script is a file of its own (no inline script under the CSP: icu/tests/test_csp.py).
    assert '<script src="/api/docs/?script="></script>' in response.content.decode()
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"] == "application/javascript"
    assert "SwaggerUIBundle" in script.content.decode()
    assert "/api/schema/" in script.content.decode()


@pytest.mark.parametrize("ward", [1, 32, 400])
def test_the_ward_by_acuity_takes_the_same_queries_whatever_its_size(
    api_client: APIClient, django_assert_max_num_queries, ward: int
) -> None:
    """The central station's read (bench/api_scale.py times it over 1,000 patients): three
    queries for 1 bed or 400, every patient with a reading, a score and an open alarm."""
    store(*(reading(uuid.uuid4(), f"bed-{n:03d}", n, pulse=60 + n % 90) for n in range(ward)))
    AlarmFactory.create_batch(ward, patient=factory.Iterator(Patient.objects.all()))
    call_command("rebuild_patient_tiles", stdout=io.StringIO())  # as the consumer keeps them

    # The token with the user's permissions, COUNT(*), the page of tiles.
    with django_assert_max_num_queries(3):
        response = api_client.get("/api/patients/", {"ordering": "-news2", "page_size": 500})

    results = response.json()["results"]
    assert len(results) == ward
    scores = [p["news2"]["score"] for p in results]
    assert scores == sorted(scores, reverse=True)
    assert all(len(p["active_alarms"]) == 1 for p in results)


def test_patient_links_are_the_urls_django_reverses(api_client: APIClient) -> None:
    """PatientLinkField reverses once per response; each patient's links must still be its
    own, as HyperlinkedIdentityField would make them."""
    patients = PatientFactory.create_batch(3)

    results = api_client.get("/api/patients/").json()["results"]

    request_host = "http://testserver"
    assert {p["uuid"]: (p["url"], p["metrics_url"], p["alarm_limits_url"]) for p in results} == {
        str(patient.uuid): (
            request_host + reverse("api:patient-detail", kwargs={"patient_uuid": patient.uuid}),
            request_host + reverse("api:patient-metrics", kwargs={"patient_uuid": patient.uuid}),
            request_host
            + reverse("api:patient-alarm-limits", kwargs={"patient_uuid": patient.uuid}),
        )
        for patient in patients
    }


def test_a_reading_is_written_as_drfs_own_walk_over_the_fields_would_write_it(
    monkeypatch,
) -> None:
    """ReadingSerializer builds its dict directly for speed: for every kind of reading it must
    equal what DRF makes of the declared fields (which also document the schema)."""
    patient = uuid.uuid4()
    store(
        reading(patient, "ann", 0),
        reading(patient, "ann", 1, artefact="spo2_probe_off", spo2=60),
        reading(patient, "ann", 2, on_oxygen=True, consciousness="V", temperature=39.4),
    )
    metrics = list(PatientMetric.objects.all())
    assert len(metrics) == 3
    partial = partial_readings(PatientFactory())
    for metric in metrics + partial:
        if metric in partial:
            monkeypatch.setattr(PatientMetric, "news2", property(lambda metric: None))
        fast = ReadingSerializer(metric).data
        walk = serializers.ModelSerializer.to_representation(ReadingSerializer(), metric)
        assert fast == walk
        assert list(fast) == list(walk)


def test_the_readings_fast_path_answers_byte_for_byte_what_the_serializer_would(
    api_client: APIClient,
) -> None:
    """The metrics endpoint reads plain rows (reading_values), builds each reading with
    reading_data and encodes the page with FastJSONRenderer: the same bytes as
    ReadingSerializer and DRF's JSONRenderer make of the same readings, for every kind of
    reading, in UTC and in another zone."""
    ann = uuid.uuid4()
    absent = dict.fromkeys(("pulse", "resp_rate", "systolic", "diastolic", "spo2", "temperature"))
    sent = [
        reading(ann, "ann", 0, sent_at=T0 + timedelta(seconds=1.5)),  # the clock 1.5 s behind
        reading(ann, "ann", 1, artefact="spo2_probe_off", spo2=60),
        reading(ann, "ann", 2, on_oxygen=True, consciousness="V", temperature=39.4, map=93),
        # Version 2, partial: scored with the earlier values still valid.
        reading(ann, "ann", 3, **{**absent, "pulse": 131, "map": 62, "etco2": 48}),
        # Hours later, SpO2 alone: the other values out of their windows, NEWS2 incomplete.
        reading(ann, "ann", 300, **{**absent, "spo2": 91}, sent_at=T0 + timedelta(hours=4)),
    ]
    store(*sent)
    patient = Patient.objects.get(uuid=ann)
    # A row stored before partial readings: no sub-scores, scored from its own values.
    PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(hours=6), systolic=85)
    metrics = list(PatientMetric.objects.filter(patient=patient).order_by("-measured_at"))
    assert len(metrics) == 6
    # Not stored for the old row nor for the artefact (not scored).
    assert [m.news2_subscores is None for m in metrics] == [True, False, False, False, True, False]
    assert [None if m.news2 is None else m.news2.complete for m in metrics] == [
        True, False, True, True, None, True
    ]  # fmt: skip

    for zone in ("UTC", "America/St_Johns"):  # UTC-3:30 in November
        with timezone.override(zone):
            response = api_client.get(metrics_url(patient))
            page = {"next": None, "previous": None}
            page["results"] = ReadingSerializer(metrics, many=True).data
            expected = JSONRenderer().render(page)
        assert response.status_code == 200
        assert response.content == expected
    assert b'"clock_offset_s":-1.5' in response.content
    assert b"-03:30" in response.content


def test_a_reading_page_reads_the_rows_of_its_queryset_for_every_shape_of_query() -> None:
    """ReadingPage (the metrics endpoint's rows) binds new values to SQL compiled once for each
    shape and loads it its own way on PostgreSQL: the SQL and the values Django compiles for
    the same query, and the same rows (every value, times to the microsecond, JSON columns),
    for each filter, direction, cursor position and slice a cursor page makes."""
    ann = uuid.uuid4()
    store(
        reading(ann, "ann", 0, sent_at=T0 + timedelta(seconds=1.5)),
        reading(ann, "ann", 1, artefact="spo2_probe_off", spo2=60),
        reading(ann, "ann", 2, on_oxygen=True, temperature=39.4),
        reading(ann, "ann", 3, **dict.fromkeys(("pulse", "resp_rate", "temperature"))),
    )
    patient = Patient.objects.get(uuid=ann)
    PatientMetricFactory(patient=patient, measured_at=T0 + timedelta(minutes=4, microseconds=7))
    middle = str(T0 + timedelta(minutes=2))  # a cursor's position: str() of a time
    checked = 0
    one, three, hour = (T0 + timedelta(minutes=m) for m in (1, 3, 60))
    for since, until in ((None, None), (one, None), (None, three), (T0, hour)):
        for ordering in ("-measured_at", "measured_at"):
            for position in (None, ("lt", middle), ("gt", middle)):
                query = ReadingPage(patient_uuid=ann, since=since, until=until).order_by(ordering)
                if position:
                    query = query.filter(**{f"measured_at__{position[0]}": position[1]})
                for page in (slice(0, 3), slice(1, 4), slice(0, 101)):
                    expected = list(query.queryset()[page])
                    assert query[page] == expected
                    assert [list(row) for row in query[page]] == [list(r) for r in expected]
                    sql, params = query.queryset()[page].query.sql_with_params()
                    assert (_reading_page_sql(query._shape(page)), query.params()) == (
                        sql,
                        list(params),
                    )
                    checked += bool(expected)
    assert checked == 68  # the queries with rows: not every filter and position leaves some
    rows = ReadingPage(patient_uuid=ann)[0:101]
    assert rows[0]["measured_at"] == T0 + timedelta(minutes=4, microseconds=7)
    assert rows[-1]["sent_at"] == T0 + timedelta(seconds=1.5)
    assert ReadingPage(patient_uuid=uuid.uuid4())[0:101] == []
    # A client chooses the slice (page size, cursor offset): the SQL kept is bounded.
    assert _reading_page_sql.cache_info().maxsize == 256


def test_a_tile_page_counts_and_reads_what_its_queryset_would_for_every_shape() -> None:
    """TilePage (the ward list's rows) binds new values to SQL compiled once for each shape
    on PostgreSQL: the same count and rows as patient_tile_rows' queryset, and the SQL Django
    compiles, for each ordering, each filter and slice; an unknown ordering still a 400."""
    icu = Unit.objects.create(code="icu-a", name="ICU A")
    beds = [Bed.objects.create(unit=icu, label=f"A{i}", position=i) for i in (1, 2)]
    ann, bob = uuid.uuid4(), uuid.uuid4()
    store(reading(ann, "Ann", 0), reading(bob, "Bob", 0, resp_rate=25))
    patients = [Patient.objects.get(uuid=ann), PatientFactory(name="Cy", mrn="M7",
                                                              mrn_authority="HOSP")]  # fmt: skip
    for patient, bed in zip(patients, beds, strict=True):
        admission_create(patient=patient, bed=bed, by=None)
    PatientFactory(name="Dee", mrn="M7")
    hosp = {"mrn": "M7", "mrn_authority": "HOSP"}
    filters = ({}, {"unit": "icu-a"}, {"mrn": "M7"}, hosp, {"unit": "icu-a", **hosp}, {"unit": "x"})
    counts = []
    for ordering in PATIENT_ORDERINGS:
        for given in filters:
            page = TilePage(ordering=ordering, **given)
            counts.append(page.count())
            assert counts[-1] == page.queryset().count()
            for rows in (slice(0, 50), slice(1, 3), slice(0, 0)):
                assert page[rows] == list(page.queryset()[rows])
                if rows.stop == 0:  # Django runs no query: nor does TilePage
                    assert _tile_page_sql(page._shape(), (0, 0)) is None
                    continue
                sql, params = page.queryset()[rows].query.sql_with_params()
                assert (_tile_page_sql(page._shape(), (rows.start, rows.stop)), page.params()) == (
                    sql,
                    list(params),
                )
    assert counts[:6] == [4, 2, 2, 1, 1, 0]
    assert [row[1] for row in TilePage(ordering="-news2")[0:2]] == [bob, ann]  # the acutest first
    with pytest.raises(InvalidParameter, match="'acuity' is not an ordering"):
        TilePage(ordering="acuity")
    assert _tile_page_sql.cache_info().maxsize == 256  # page sizes and numbers: bounded


def test_the_ward_list_answers_byte_for_byte_what_drfs_walk_and_renderer_would(
    api_client: APIClient, user, monkeypatch
) -> None:
    """PatientSerializer and OpenAlarmSerializer build their dicts directly, the list is
    encoded by FastJSONRenderer, and served from the snapshot (patients.models.PatientTile):
    the same bytes as DRF's walk over the declared fields and its JSONRenderer, for patients
    in every state a tile shows, in UTC and in another zone, with and without tiles."""
    ann, bob = uuid.uuid4(), uuid.uuid4()
    absent = dict.fromkeys(("resp_rate", "systolic", "diastolic", "temperature"))
    store(
        reading(ann, "Ann", 0, sent_at=T0 + timedelta(seconds=2)),
        reading(ann, "Ann Smith", 1),  # another name: a name conflict
        reading(bob, "Bob", 0),
        reading(bob, "Bob", 1, **absent, map=70, etco2=41),  # partial
    )
    patient_ann, patient_bob = Patient.objects.get(uuid=ann), Patient.objects.get(uuid=bob)
    PatientFactory(name="Cy", mrn="MRN7", mrn_authority="HOSP")  # no reading yet
    AlarmFactory(patient=patient_ann, activated_at=T0, escalated_at=T0 + timedelta(minutes=2))
    AlarmFactory(patient=patient_ann, kind="pulse_high", priority="high", state="acknowledged")
    AlarmFactory(patient=patient_bob, state="resolved")  # not open: not listed
    alarm_switch_off(patient=patient_bob, kind="spo2_low", reason="probe", user=user)
    alarm_switch_off(patient=patient_bob, kind="etco2_high", reason="weaning", user=None)
    patient_monitoring_end(patient=patient_bob, user=user)

    for zone in ("UTC", "America/St_Johns"):
        with timezone.override(zone):
            # Built for each patient (no tile of the zone), then served from the snapshot.
            for tiles in (False, True):
                if tiles:
                    call_command("rebuild_patient_tiles", stdout=io.StringIO())
                    assert tiles_stale() == []
                for params in ({}, {"ordering": "-news2"}, {"page_size": 2, "page": 2}):
                    fast, slow = ward_fast_and_slow(api_client, monkeypatch, params)
                    assert fast == slow
    body = api_client.get("/api/patients/").json()["results"]
    assert [p["name"] for p in body] == ["Ann", "Bob", "Cy"]
    assert [len(p["name_conflicts"]) for p in body] == [1, 0, 0]
    assert [len(p["active_alarms"]) for p in body] == [2, 0, 0]
    assert [len(p["alarms_off"]) for p in body] == [0, 2, 0]
    assert [p["monitoring_ended_by"] for p in body] == [None, user.username, None]
    assert [p["latest_metric"] is None for p in body] == [False, False, True]
