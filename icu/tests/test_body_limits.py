"""Request bodies are bounded (MAX_REQUEST_BODY_BYTES): a bigger one is refused with 413 in the
API's error shape before anything reads it, and a body without a length (chunked, which
Django under WSGI would read as empty) with 411. gunicorn's own limits on the request line and
headers are in icu/tests/test_production_server.py."""

import json

import pytest

from patients.tests.factories import PatientFactory

MB = 2**20
LIMIT = 1 * MB  # the default

TOO_LARGE = {
    "error": {
        "status": 413,
        "code": "request_too_large",
        "message": f"The request body is larger than the {LIMIT} bytes accepted.",
    }
}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps({"username": "nurse", "password": "x"})),
        ("application/x-www-form-urlencoded", "username=nurse&password=x"),
    ],
)
def test_a_declared_100_mb_body_at_the_token_endpoint_is_refused_unread(
    anon_client, content_type, body, caplog
):
    """The body is a few bytes, its Content-Length says 100 MB: anything that tried to read
    it would fail (the test client refuses to read past the real body), so a 413 shows that
    nothing did."""
    response = anon_client.generic(
        "POST",
        "/api/auth/token/",
        body,
        content_type=content_type,
        CONTENT_LENGTH=str(100 * MB),
    )

    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_a_3_mb_patch_of_alarm_limits_is_413(api_client, caplog):
    patient = PatientFactory(name="ann")
    body = {"spo2_low": 88, "padding": "x" * (3 * MB)}

    response = api_client.patch(f"/api/patients/{patient.uuid}/alarm-limits/", body, format="json")

    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    limits = api_client.get(f"/api/patients/{patient.uuid}/alarm-limits/").json()
    assert limits["spo2_low"] == 90  # unchanged


def test_a_body_at_the_limit_is_read(api_client):
    """The limit is the body's size, not more: a PATCH of exactly MAX_REQUEST_BODY_BYTES
    goes through."""
    patient = PatientFactory(name="ann")
    head = '{"spo2_low": 88, "padding": "'
    body = head + "x" * (LIMIT - len(head) - 2) + '"}'
    assert len(body) == LIMIT

    response = api_client.generic(
        "PATCH",
        f"/api/patients/{patient.uuid}/alarm-limits/",
        body,
        content_type="application/json",
    )

    assert response.status_code == 200, response.content[:300]
    assert response.json()["spo2_low"] == 88


def test_the_limit_is_a_setting(api_client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    patient = PatientFactory(name="ann")

    response = api_client.patch(
        f"/api/patients/{patient.uuid}/alarm-limits/", {"padding": "x" * 100}, format="json"
    )

    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "The request body is larger than the 100 bytes accepted."
    )


def test_a_body_without_a_length_is_411(api_client):
    """Under WSGI Django reads a body without Content-Length as empty: acting on a PATCH whose
    body was silently dropped would be wrong, so it is refused."""
    patient = PatientFactory(name="ann")

    response = api_client.generic(
        "PATCH",
        f"/api/patients/{patient.uuid}/alarm-limits/",
        b"",
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    assert response.status_code == 411
    assert response.json() == {
        "error": {
            "status": 411,
            "code": "length_required",
            "message": "A request body needs a Content-Length (chunked bodies are not accepted).",
        }
    }


def test_a_form_of_too_many_fields_is_400(anon_client, caplog):
    """Django's DATA_UPLOAD_MAX_NUMBER_FIELDS (1000), met by DRF's form parser."""
    body = "&".join(f"f{n}=x" for n in range(2000))

    response = anon_client.generic(
        "POST", "/api/auth/token/", body, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "status": 400,
            "code": "too_many_fields",
            "message": "The request body has too many fields.",
        }
    }
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_django_s_own_body_limit_met_by_a_parser_is_413(api_client, settings):
    """Should DATA_UPLOAD_MAX_MEMORY_SIZE ever be below MAX_REQUEST_BODY_BYTES (it follows it
    in icu/settings.py), the parser's RequestDataTooBig is a 413 too, not a 500."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    patient = PatientFactory(name="ann")

    response = api_client.patch(
        f"/api/patients/{patient.uuid}/alarm-limits/", {"padding": "x" * 100}, format="json"
    )

    assert response.status_code == 413
    assert response.json()["error"] == {
        "status": 413,
        "code": "request_too_large",
        "message": "The request body is larger than the 100 bytes accepted.",
    }
