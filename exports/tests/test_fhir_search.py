"""`GET /fhir/Observation`: a FHIR R4 searchset of a patient's readings, paged, filtered by
date and code, the same Observations as the export's."""

import io
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from exports.fhir import iso
from exports.tests.checks import check_observation, expected_codes, fhir_valid, stored_readings
from exports.writers import fhir_write
from vitals.tests.factories import T0, PatientMetricFactory

pytestmark = pytest.mark.django_db


def search(client, **params):
    response = client.get("/fhir/Observation", params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/fhir+json"
    return fhir_valid(json.loads(response.content))


def pages(client, **params) -> tuple[list[dict], list[dict]]:
    """Every page, following `next`; returns the bundles and all their entries."""
    bundles = [search(client, **params)]
    while next_link := [x["url"] for x in bundles[-1]["link"] if x["relation"] == "next"]:
        query = parse_qs(urlsplit(next_link[0]).query)
        bundles.append(search(client, **{k: v if len(v) > 1 else v[0] for k, v in query.items()}))
        assert len(bundles) < 100
    return bundles, [e for b in bundles for e in b.get("entry", [])]


def test_every_observation_of_every_reading_in_pages_the_same_as_the_export(viewer_client, patient):
    """Viewers may search (it shows what the metrics endpoint shows). 23 readings, 5 vital
    signs each and NEWS2 for the 19 scored: 134 Observations, 50 a page."""
    bundles, entries = pages(viewer_client, patient=str(patient.uuid), _count="50")

    readings = stored_readings(patient)
    expected = [(r, code) for r in readings for code in expected_codes(r)]
    assert len(expected) == 23 * 5 + 19 == 134
    assert [len(b.get("entry", [])) for b in bundles] == [50, 50, 34]
    for bundle in bundles:
        assert (bundle["type"], bundle["total"]) == ("searchset", 134)
        assert bundle["link"][0]["relation"] == "self"
    assert "next" not in [x["relation"] for x in bundles[-1]["link"]]
    for item, (reading, code) in zip(entries, expected, strict=True):
        assert check_observation(item["resource"], reading, patient_uuid=patient.uuid) == code
        assert item["search"] == {"mode": "match"}
    # The same resources, ids included, as in an export of the patient.
    out = io.StringIO()
    fhir_write(
        out,
        patient_uuid=patient.uuid,
        patient_name=patient.name,
        readings=readings,
        bundle_id=patient.uuid,
        timestamp=T0,
    )
    exported = json.loads(out.getvalue())["entry"][1:]
    assert [e["resource"] for e in entries] == [e["resource"] for e in exported]


def test_a_page_can_end_inside_a_reading(api_client, patient):
    """Pages of 4 cut each reading's 5-6 Observations; none is lost or repeated."""
    _, entries = pages(api_client, patient=f"Patient/{patient.uuid}", _count="4")
    ids = [e["resource"]["id"] for e in entries]
    assert len(ids) == len(set(ids)) == 134


@pytest.mark.parametrize(
    ("params", "readings", "per_reading"),
    [
        # 5 s apart from T0 (+0/1/2 ms): ge/le take the bound's whole second
        ({"date": ["ge2026-11-23T08:00:15Z", "le2026-11-23T08:00:45Z"]}, range(3, 10), None),
        ({"date": ["gt2026-11-23T08:00:15Z", "lt2026-11-23T08:00:45Z"]}, range(4, 9), None),
        ({"date": "2026-11-23T09:00:15+01:00"}, [3], None),  # eq: that second, any offset
        ({"date": "le2026-11-22"}, [], None),
        ({"date": "2026-11"}, range(23), None),
        ({"code": "8867-4"}, range(23), ["8867-4"]),
        ({"code": "http://loinc.org|85354-9,8310-5"}, range(23), ["8310-5", "85354-9"]),
        ({"code": "http://snomed.info/sct|1104051000000101"}, "scored", ["1104051000000101"]),
        ({"code": "http://snomed.info/sct|8867-4"}, [], None),
    ],
)
def test_date_and_code_narrow_the_search(api_client, patient, params, readings, per_reading):
    _, entries = pages(api_client, patient=str(patient.uuid), **params)

    stored = stored_readings(patient)
    chosen = (
        [r for r in stored if r.news2_score is not None]
        if readings == "scored"
        else [stored[i] for i in readings]
    )
    expected = [
        (r, code)
        for r in chosen
        for code in expected_codes(r)
        if per_reading is None or code in per_reading
    ]
    assert [
        (e["resource"]["effectiveDateTime"], e["resource"]["code"]["coding"][0]["code"])
        for e in entries
    ] == [(iso(r.measured_at), code) for r, code in expected]


def test_an_empty_result_is_a_valid_bundle_without_entries(api_client, patient):
    bundle = search(api_client, patient=str(patient.uuid), date="ge2030")
    assert (bundle["total"], "entry" in bundle) == (0, False)
    assert [x["relation"] for x in bundle["link"]] == ["self"]


OURS = "our patient"  # replaced by the patient's uuid


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "'patient' is required: the patient's uuid."),
        ({"patient": "nobody"}, 400, "'nobody' is not a valid patient uuid."),
        (
            {"patient": "6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60"},
            404,
            "No patient with uuid 6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60.",
        ),
        (
            {"patient": OURS, "date": "ge2026-11-23T10:00:00"},
            400,
            "'date=ge2026-11-23T10:00:00' is not a FHIR date search",
        ),
        ({"patient": OURS, "_count": "0"}, 400, "'_count=0' is not a page size"),
        ({"patient": OURS, "_cursor": "forged"}, 400, "'_cursor' is not a cursor this search"),
    ],
)
def test_bad_searches_are_refused_in_the_api_error_shape(
    api_client, patient, params, status, message
):
    params = {k: str(patient.uuid) if v == OURS else v for k, v in params.items()}
    response = api_client.get("/fhir/Observation", params, HTTP_ACCEPT="application/fhir+json")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["message"].startswith(message)


def test_anonymous_users_are_refused(anon_client, patient):
    response = anon_client.get("/fhir/Observation", {"patient": str(patient.uuid)})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_next_link_keeps_the_search(api_client, patient):
    bundle = search(
        api_client, patient=str(patient.uuid), code="8867-4", date="ge2026-11-23", _count="5"
    )
    [self_link, next_link] = bundle["link"]
    assert self_link["url"].startswith("http://testserver/fhir/Observation?")
    query = parse_qs(urlsplit(next_link["url"]).query)
    assert {k: v for k, v in query.items() if k != "_cursor"} == {
        "patient": [str(patient.uuid)],
        "code": ["8867-4"],
        "date": ["ge2026-11-23"],
        "_count": ["5"],
    }


def test_partial_readings_have_only_their_observations_and_the_new_codes_are_found(
    api_client, patient
):
    """After bob's 23 full readings: a partial one (pulse and SpO2, scored incomplete), one
    with MAP and EtCO2 but no cuff pressure, one with everything (not scored)."""
    start = T0 + timedelta(minutes=5)
    no_signs = dict.fromkeys(("pulse", "resp_rate", "systolic", "diastolic", "spo2"))
    PatientMetricFactory(
        patient=patient,
        measured_at=start,
        **{**no_signs, "temperature": None, "pulse": 88, "spo2": 95},
        news2_score=1,
        news2_risk="low",
        news2_missing=["systolic", "temperature"],
    )
    PatientMetricFactory(
        patient=patient,
        measured_at=start + timedelta(seconds=5),
        systolic=None,
        diastolic=None,
        map=62,
        etco2=48,
        news2_score=3,
        news2_risk="low",
    )
    PatientMetricFactory(
        patient=patient, measured_at=start + timedelta(seconds=10), map=70, etco2=50
    )

    bundle = search(api_client, patient=str(patient.uuid), date=iso(start))
    assert bundle["total"] == 3
    assert [
        (e["resource"]["code"]["coding"][0]["code"], e["resource"]["valueQuantity"]["value"])
        for e in bundle["entry"]
    ] == [("8867-4", 88), ("2708-6", 95), ("1104051000000101", 1)]

    # EtCO2 in 2 readings of 26, a page each: the readings without one are passed over.
    bundles, entries = pages(api_client, patient=str(patient.uuid), code="19889-5", _count="1")
    assert [b["total"] for b in bundles] == [2, 2]
    assert [
        (e["resource"]["effectiveDateTime"], e["resource"]["valueQuantity"]["value"])
        for e in entries
    ] == [("2026-11-23T08:05:05Z", 48), ("2026-11-23T08:05:10Z", 50)]
    bundles, entries = pages(
        api_client, patient=str(patient.uuid), code="http://loinc.org|8478-0,85354-9"
    )
    assert bundles[0]["total"] == 23 + 2 + 1
    assert [e["resource"]["code"]["coding"][0]["code"] for e in entries[-3:]] == [
        "8478-0",
        "85354-9",
        "8478-0",
    ]
    assert entries[-3]["resource"]["valueQuantity"]["value"] == 62

    # Everything: bob's 134, then 3, 7 (no panel) and 7 (not scored).
    bundles, entries = pages(api_client, patient=str(patient.uuid), _count="50")
    assert bundles[0]["total"] == 134 + 3 + 7 + 7
    readings = stored_readings(patient)
    expected = [(r, code) for r in readings for code in expected_codes(r)]
    assert len(entries) == len(expected) == 151
    for item, (reading, code) in zip(entries, expected, strict=True):
        assert check_observation(item["resource"], reading, patient_uuid=patient.uuid) == code
