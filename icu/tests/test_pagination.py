"""Cursors (core/pagination.py): a paginated list follows only the cursors it issued itself.
Anything else, however it was made, is a 400 `invalid_cursor` in the API's error shape, never
a 404, never a 500. The cursor lists are a patient's readings (`cursor`) and the FHIR search
(`_cursor`); the other lists are numbered pages (`?page=`), whose bad numbers are DRF's 404."""

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.request_limits import NUL_REFUSED
from patients.tests.factories import PatientFactory
from vitals.tests.factories import AlarmFactory, PatientMetricFactory

pytestmark = pytest.mark.django_db

METRICS_REFUSAL = {
    "error": {
        "status": 400,
        "code": "invalid_cursor",
        "message": "'cursor' is not a cursor this list issued: follow its `next` or "
        "`previous` link.",
    }
}
FHIR_REFUSAL = {
    "error": {
        "status": 400,
        "code": "invalid_cursor",
        "message": "'_cursor' is not a cursor this search issued: follow its `next` link.",
    }
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64json(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def patient():
    patient = PatientFactory(name="ann")
    for _ in range(3):
        PatientMetricFactory(patient=patient)
    return patient


def metrics_url(patient) -> str:
    return f"/api/patients/{patient.uuid}/metrics/"


def query_param(url: str, name: str) -> str:
    return parse_qs(urlsplit(url).query)[name][0]


def issued_metrics_cursor(client, patient) -> str:
    first = client.get(metrics_url(patient), {"page_size": 1}).json()
    return query_param(first["next"], "cursor")


def issued_fhir_cursor(client, patient) -> str:
    bundle = json.loads(
        client.get("/fhir/Observation", {"patient": patient.uuid, "_count": 1}).content
    )
    [next_url] = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    return query_param(next_url, "_cursor")


def tampered(cursor: str) -> str:
    """The same cursor, one character of it changed."""
    return cursor[:-1] + ("A" if cursor[-1] != "A" else "B")


# What DRF's cursors look like (base64 of a query string: o offset, r reverse, p position) and
# what a client could make of them; "issued" ones are taken from a real `next` link.
METRICS_FORGERIES = {
    "base64 garbage": "garbage!!",
    "not base64 at all": "%%%",
    "base64 of nonsense": b64("nonsense"),
    "base64 of bytes that are not text": base64.b64encode(b"\xff\xfe\x00").decode(),
    "an injected position": b64("p=' OR 1=1 --"),
    "a position that is not a time": b64("p=12"),
    "a position for another ordering (a name)": b64("p=alice"),
    "a well-formed position DRF would issue": b64("p=2026-11-23+08%3A00%3A05%2B00%3A00"),
    "a time past the end of time in UTC": b64("p=9999-12-31T23:59:59-14:00"),
    "a time before the start of time in UTC": b64("p=0001-01-01T00:00:00+14:00"),
    "a huge offset": b64("o=99999999999999999999&p=2026-11-23+08%3A00%3A05%2B00%3A00"),
    "a negative offset": b64("o=-1"),
    "a reverse flag that is not one": b64("r=yes"),
    "a huge cursor": "A" * 3000,
    "an issued cursor, tampered with": "tampered",
    "an issued cursor, cut short": "cut",
    "a cursor of the FHIR search": "fhir",
}


@pytest.mark.parametrize("cursor", METRICS_FORGERIES.values(), ids=METRICS_FORGERIES.keys())
def test_a_cursor_the_readings_list_did_not_issue_is_400(api_client, patient, cursor, caplog):
    if cursor in ("tampered", "cut"):
        issued = issued_metrics_cursor(api_client, patient)
        cursor = tampered(issued) if cursor == "tampered" else issued[:-10]
    elif cursor == "fhir":
        cursor = issued_fhir_cursor(api_client, patient)

    response = api_client.get(metrics_url(patient), {"cursor": cursor})

    assert response.status_code == 400
    assert response.json() == METRICS_REFUSAL
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


FHIR_FORGERIES = {
    "not base64": "forged!",
    "base64 of nonsense": b64json("nonsense"),
    "an injected time": b64json(["' OR 1=1 --", 0]),
    "a time without an offset": b64json(["2026-11-23T08:00:05", 0]),
    "a time before the start of time in UTC": b64json(["0001-01-01T00:00:00+14:00", 0]),
    "a time past the end of time in UTC": b64json(["9999-12-31T23:59:59-14:00", 0]),
    "a huge skip": b64json(["2026-11-23T08:00:05+00:00", 10**30]),
    "a negative skip": b64json(["2026-11-23T08:00:05+00:00", -1]),
    "deeply nested JSON": base64.urlsafe_b64encode(b"[" * 3000).decode(),
    "a well-formed cursor it would issue": b64json(["2026-11-23T08:00:05+00:00", 1]),
    "an issued cursor, tampered with": "tampered",
    "a cursor of the readings list": "metrics",
}


@pytest.mark.parametrize("cursor", FHIR_FORGERIES.values(), ids=FHIR_FORGERIES.keys())
def test_a_cursor_the_fhir_search_did_not_issue_is_400(api_client, patient, cursor, caplog):
    if cursor == "tampered":
        cursor = tampered(issued_fhir_cursor(api_client, patient))
    elif cursor == "metrics":
        cursor = issued_metrics_cursor(api_client, patient)

    response = api_client.get("/fhir/Observation", {"patient": patient.uuid, "_cursor": cursor})

    assert response.status_code == 400
    assert response.json() == FHIR_REFUSAL
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_issued_cursors_are_followed(api_client, patient):
    every = [m["measured_at"] for m in api_client.get(metrics_url(patient)).json()["results"]]
    second = api_client.get(
        metrics_url(patient), {"cursor": issued_metrics_cursor(api_client, patient)}
    )
    assert second.status_code == 200
    assert [m["measured_at"] for m in second.json()["results"]] == every[1:]

    cursor = issued_fhir_cursor(api_client, patient)
    page = api_client.get("/fhir/Observation", {"patient": patient.uuid, "_cursor": cursor})
    assert page.status_code == 200
    # An empty cursor is no cursor: the first page.
    first = api_client.get(metrics_url(patient), {"cursor": ""})
    assert (first.status_code, len(first.json()["results"])) == (200, 3)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cursor=st.one_of(
        st.text(min_size=1),
        st.builds(
            lambda o, r, p: b64(f"o={o}&r={r}&p={p}"),
            st.integers(min_value=-(10**30), max_value=10**30),
            st.sampled_from(["0", "1", "2", "x"]),
            st.one_of(st.text(), st.datetimes().map(str)),
        ),
    )
)
@example(cursor=b64("p=' OR 1=1 --"))
@example(cursor="\x00")
def test_no_cursor_string_makes_the_readings_list_fail(api_client, patient, cursor):
    response = api_client.get(metrics_url(patient), {"cursor": cursor})

    assert response.status_code == 400, response.content
    if "\x00" in cursor:  # refused before the view: no parameter may hold a NUL
        assert response.json()["error"] == {
            "status": 400, "code": "invalid_parameter", "message": NUL_REFUSED
        }  # fmt: skip
    else:
        assert response.json() == METRICS_REFUSAL


@pytest.mark.parametrize("page", ["0", "-1", "x", "1 OR 1=1", "99999999999999999999", "1e3"])
@pytest.mark.parametrize("path", ["/api/alarms/", "/api/audit/"])
def test_a_numbered_list_answers_a_bad_page_with_404(staff_client, page, path):
    AlarmFactory()

    response = staff_client.get(path, {"page": page})

    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "code": "not_found", "message": "Invalid page."}
    }
