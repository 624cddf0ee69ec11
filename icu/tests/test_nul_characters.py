"""A NUL character (U+0000) in a request's path or query is refused with 400 in the API's error
shape before any view sees it. PostgreSQL's text cannot hold one ("DataError: PostgreSQL text
fields cannot contain NUL (0x00) bytes"): passed on to a filter or a lookup it was a 500 (found
by the schema fuzzer on `GET /api/patients/?mrn=...`); SQLite stores it. No form of ours has a
use for one. Runs on both engines: the 500 was PostgreSQL's."""

import pytest

from patients.tests.factories import PatientFactory

REFUSED = {
    "error": {
        "status": 400,
        "code": "invalid_parameter",
        "message": "The request's address holds a NUL character (U+0000), which no parameter "
        "may hold.",
    }
}


@pytest.mark.parametrize(
    "url",
    [
        "/api/patients/?mrn=%00",
        "/api/patients/?mrn=MRN1&mrn_authority=a%00b",
        "/api/patients/?unit=icu%00",
        "/api/patients/?ordering=%00name",
        "/api/units/icu%00/",
        "/api/units/icu%00/alarm-report/",
        "/api/alarms/?unit=icu%00",
        "/patients?mrn=%00",  # the original brief's path
        "/?unit=%00",  # the ward page
    ],
)
def test_a_nul_character_in_the_address_is_400_not_a_database_error(api_client, url):
    patient = PatientFactory(name="ann", mrn="MRN1", mrn_authority="H")

    response = api_client.get(url)

    assert response.status_code == 400, response.content[:300]
    assert response.json() == REFUSED
    # The same address without it is answered as ever.
    clean = api_client.get(url.replace("%00", ""))
    assert clean.status_code in (200, 302, 404), clean.content[:300]
    assert PatientFactory._meta.model.objects.get().uuid == patient.uuid


def test_a_nul_character_elsewhere_in_a_value_is_kept_out_of_a_write(api_client):
    """Bodies are the serializers' (DRF's CharField refuses NUL): a rename with one is a 400
    naming the field, and the name stays."""
    patient = PatientFactory(name="ann")

    response = api_client.post(
        f"/api/patients/{patient.uuid}/rename/", {"name": "a\x00b"}, format="json"
    )

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "invalid"
    patient.refresh_from_db()
    assert patient.name == "ann"
