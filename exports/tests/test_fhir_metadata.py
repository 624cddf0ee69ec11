"""/fhir/metadata: the CapabilityStatement a FHIR client asks for first, valid FHIR R4, naming
the one search the server really has."""

import pytest
from fhir.resources import construct_fhir_element

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/metadata/"])
def test_metadata_is_a_valid_r4_capability_statement_open_to_anyone(client, path):
    response = client.get(path, HTTP_ACCEPT="application/fhir+json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/fhir+json"
    body = response.json()
    statement = construct_fhir_element("CapabilityStatement", body)
    assert statement.fhirVersion == "4.0.1"
    assert (statement.status, statement.kind) == ("active", "instance")
    assert statement.format == ["json"]
    assert statement.implementation.url == "http://testserver/fhir"
    [rest] = body["rest"]
    assert rest["mode"] == "server"
    [resource] = rest["resource"]
    assert resource["type"] == "Observation"
    assert resource["interaction"] == [{"code": "search-type"}]
    assert [(p["name"], p["type"]) for p in resource["searchParam"]] == [
        ("patient", "reference"),
        ("date", "date"),
        ("code", "token"),
    ]


def test_the_observation_search_takes_a_trailing_slash(api_client):
    response = api_client.get("/fhir/Observation/")

    # The search itself, not a 404: it asks for its patient.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_parameter"
