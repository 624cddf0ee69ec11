"""What a person meets at the API's and the FHIR facade's addresses: Swagger UI and the schema
from a browser (sent to the login and back), and every unknown path under the API and FHIR
prefixes answered in its JSON shape, with DEBUG on (`make run`) as with it off."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

# What Chromium sends for a page it navigates to.
BROWSER = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
UUID = "0b7c6f3e-1111-4111-8111-111111111111"


@pytest.mark.parametrize("path", ["/api/docs/", "/api/schema/"])
def test_a_browser_not_logged_in_is_sent_to_the_login_and_back(client: Client, user, path):
    response = client.get(path, HTTP_ACCEPT=BROWSER)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"
    login = client.post(
        "/login/", {"username": "nurse", "password": "correct-horse-9", "next": path}
    )
    assert login.status_code == 302
    assert login["Location"] == path
    back = client.get(path, HTTP_ACCEPT=BROWSER)
    assert back.status_code == 200


@pytest.mark.parametrize("path", ["/api/docs/", "/api/schema/"])
def test_a_program_not_logged_in_still_gets_the_401(client: Client, path):
    response = client.get(path, HTTP_ACCEPT="application/json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("accept", [BROWSER, "text/html"])
def test_the_schema_answers_a_browser_with_the_schema_not_406(admin_client: Client, accept):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.oai.openapi; charset=utf-8"
    assert response.content.startswith(b"openapi: 3.0.3\n")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "path", ["/api/nonsense/", "/api/nonsense", f"/api/patient/{UUID}", f"/api/patient/{UUID}/"]
)
def test_an_unknown_api_path_answers_in_the_error_shape(admin_client, settings, debug, path):
    settings.DEBUG = debug
    for method in ("get", "post", "delete"):
        response = getattr(admin_client, method)(path, HTTP_ACCEPT=BROWSER)

        assert response.status_code == 404, method
        assert response["Content-Type"] == "application/json"
        assert response.json() == {
            "error": {"status": 404, "code": "not_found", "message": f"No such resource: {path}"}
        }


def test_an_api_path_without_its_slash_is_still_redirected_to_it(admin_client, settings):
    settings.DEBUG = True
    response = admin_client.get("/api/docs", HTTP_ACCEPT=BROWSER)

    assert response.status_code == 301
    assert response["Location"] == "/api/docs/"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/fhir/nonsense", "/fhir/Patient/x", "/fhir/"])
def test_an_unknown_fhir_path_answers_an_operation_outcome(admin_client, settings, debug, path):
    settings.DEBUG = debug
    response = admin_client.get(path, HTTP_ACCEPT="application/fhir+json")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/fhir+json"
    assert response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "not-found",
                "diagnostics": f"No such resource: {path}. This FHIR server serves "
                "/fhir/metadata and /fhir/Observation.",
            }
        ],
    }
