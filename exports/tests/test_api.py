"""The export endpoints: asking for an export, its status, its file; who may see what; bad
input. The job itself runs in-process here (export_run); through the real worker in
test_e2e.py."""

import json
import re
from datetime import UTC, datetime

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from exports.models import Export
from exports.services import export_run
from exports.tests.checks import check_csv_export, check_fhir_export, stored_readings
from exports.tests.factories import ExportFactory
from vitals.tests.factories import T0

pytestmark = pytest.mark.django_db


def exports_url(patient) -> str:
    return f"/api/patients/{patient.uuid}/exports/"


def post(client, patient, body):
    return client.post(exports_url(patient), body, format="json")


def test_asking_for_an_export_answers_202_with_its_id_status_and_urls(
    api_client, user, patient, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            api_client,
            patient,
            {"format": "fhir", "since": "2026-11-23T09:00:00+01:00", "until": "2026-11-23T09:00Z"},
        )

    assert response.status_code == 202
    export = Export.objects.get()
    body = response.json()
    status_url = f"http://testserver/api/exports/{export.id}/"
    assert body == {
        "id": str(export.id),
        "status": "pending",
        "format": "fhir",
        "patient": str(patient.uuid),
        "since": "2026-11-23T08:00:00Z",
        "until": "2026-11-23T09:00:00Z",
        "requested_by": "nurse",
        "created_at": body["created_at"],
        "started_at": None,
        "finished_at": None,
        "row_count": None,
        "error": "",
        "expires_at": body["expires_at"],
        "status_url": status_url,
        "result_url": f"{status_url}result/",
    }
    assert response["Location"] == status_url
    assert (export.requested_by, export.patient) == (user, patient)
    # Enqueued once the request's transaction committed.
    assert DBTaskResult.objects.get().args_kwargs == {"args": [str(export.id)], "kwargs": {}}


def test_the_status_follows_the_job(api_client, user, patient, media_root):
    export = ExportFactory(requested_by=user, patient=patient)
    url = f"/api/exports/{export.id}/"
    assert api_client.get(url).json()["status"] == "pending"

    export_run(export_id=export.id)

    body = api_client.get(url).json()
    assert (body["status"], body["row_count"], body["error"]) == ("success", 23, "")
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]


@pytest.mark.parametrize("format", ["csv", "fhir"])
def test_the_result_is_the_file_as_an_attachment(api_client, user, patient, media_root, format):
    export = ExportFactory(requested_by=user, patient=patient, format=format)
    export_run(export_id=export.id)
    export.refresh_from_db()

    # FHIR clients send Accept: application/fhir+json; that must not be a 406.
    response = api_client.get(
        f"/api/exports/{export.id}/result/", HTTP_ACCEPT="application/fhir+json"
    )

    assert response.status_code == 200
    moment = export.created_at.strftime("%Y%m%dT%H%M%SZ")
    name, content_type = {
        "csv": (f"vitals-{patient.uuid}-{moment}.csv", "text/csv; charset=utf-8"),
        "fhir": (f"vitals-{patient.uuid}-{moment}.fhir.json", "application/fhir+json"),
    }[format]
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    content = b"".join(response.streaming_content).decode()
    assert int(response["Content-Length"]) == len(content.encode())
    if format == "csv":
        check_csv_export(content, patient, stored_readings(patient))
    else:
        check_fhir_export(json.loads(content), patient, stored_readings(patient))


@pytest.mark.parametrize("status", ["pending", "running"])
def test_the_result_is_a_409_until_it_is_ready(api_client, user, patient, status):
    export = ExportFactory(requested_by=user, patient=patient, status=status)
    response = api_client.get(f"/api/exports/{export.id}/result/")
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "status": 409,
            "code": "export_not_ready",
            "message": f"The export {export.id} is {status}: its result is not ready yet.",
        }
    }


def test_the_result_of_a_failed_export_is_a_409_saying_why(api_client, user, patient, media_root):
    export = ExportFactory(requested_by=user, patient=patient)
    patient.delete()
    export_run(export_id=export.id)

    status = api_client.get(f"/api/exports/{export.id}/").json()
    response = api_client.get(f"/api/exports/{export.id}/result/")

    message = f"The patient {export.patient_uuid} was deleted before the export ran."
    assert (status["status"], status["error"], status["patient"]) == (
        "failure",
        message,
        str(export.patient_uuid),
    )
    assert response.status_code == 409
    assert response.json()["error"] == {
        "status": 409,
        "code": "export_failed",
        "message": f"The export {export.id} failed: {message}",
    }


def test_an_expired_result_is_gone_then_the_export_is_not_found(
    api_client, user, patient, media_root
):
    export = ExportFactory(requested_by=user, patient=patient)
    export_run(export_id=export.id)
    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now())

    response = api_client.get(f"/api/exports/{export.id}/result/")
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "export_expired"
    assert api_client.get(f"/api/exports/{export.id}/").json()["status"] == "success"

    export_run(export_id=ExportFactory(patient=patient).id)  # the worker sweeps
    assert api_client.get(f"/api/exports/{export.id}/").status_code == 404
    assert api_client.get(f"/api/exports/{export.id}/result/").status_code == 404


def test_a_result_whose_file_is_missing_is_a_server_error_that_says_so(
    api_client, user, patient, media_root
):
    export = ExportFactory(requested_by=user, patient=patient)
    export_run(export_id=export.id)
    (media_root / f"exports/{export.id}.csv").unlink()
    response = api_client.get(f"/api/exports/{export.id}/result/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "export_result_missing"


# --- who may see what --------------------------------------------------------------------------
def test_someone_elses_export_is_not_found_staff_see_every_one(
    api_client, staff_client, django_user_model, patient, media_root
):
    other = django_user_model.objects.create_user("doctor")
    export = ExportFactory(requested_by=other, patient=patient)
    export_run(export_id=export.id)
    missing = {
        "error": {
            "status": 404,
            "code": "export_not_found",
            "message": f"No export with id {export.id}.",
        }
    }
    for path in ("", "result/"):
        response = api_client.get(f"/api/exports/{export.id}/{path}")
        assert (response.status_code, response.json()) == (404, missing)
        assert staff_client.get(f"/api/exports/{export.id}/{path}").status_code == 200
    assert api_client.get("/api/exports/").json()["count"] == 0
    assert api_client.get(exports_url(patient)).json()["count"] == 0
    assert [e["id"] for e in staff_client.get("/api/exports/").json()["results"]] == [
        str(export.id)
    ]


def test_the_lists_show_your_exports_newest_first(api_client, user, patient):
    other_patient_export = ExportFactory(requested_by=user)
    first = ExportFactory(requested_by=user, patient=patient)
    second = ExportFactory(requested_by=user, patient=patient, format="fhir")

    mine = api_client.get("/api/exports/").json()
    of_patient = api_client.get(exports_url(patient)).json()

    assert [e["id"] for e in mine["results"]] == [
        str(second.id),
        str(first.id),
        str(other_patient_export.id),
    ]
    assert [e["id"] for e in of_patient["results"]] == [str(second.id), str(first.id)]


@pytest.mark.parametrize("export_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_and_malformed_export_ids_are_not_found(api_client, export_id):
    for path in ("", "result/"):
        response = api_client.get(f"/api/exports/{export_id}/{path}")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"No export with id {export_id}."


def test_anonymous_users_are_refused(anon_client, patient):
    export = ExportFactory(patient=patient)
    for method, url in [
        ("post", exports_url(patient)),
        ("get", exports_url(patient)),
        ("get", "/api/exports/"),
        ("get", f"/api/exports/{export.id}/"),
        ("get", f"/api/exports/{export.id}/result/"),
    ]:
        assert getattr(anon_client, method)(url).status_code == 401
    assert Export.objects.count() == 1


def test_viewers_may_not_export_clinicians_may(viewer_client, api_client, patient):
    """Reading the readings is a viewer's right; a file of them leaving the monitor takes the
    clinician role (exports.add_export)."""
    response = post(viewer_client, patient, {"format": "csv"})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Your role does not allow this; it takes the permissions patients.view_patient, "
        "vitals.view_patientmetric, exports.view_export, exports.add_export."
    )
    assert viewer_client.get("/api/exports/").status_code == 403
    assert not Export.objects.exists()
    assert post(api_client, patient, {"format": "csv"}).status_code == 202


def test_a_user_given_the_export_permissions_may_export(viewer, viewer_client, patient):
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_export", "view_export"])
    )
    assert post(viewer_client, patient, {"format": "csv"}).status_code == 202


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"format": ["This field is required."]}),
        ({"format": "xml"}, {"format": ['"xml" is not a valid choice.']}),
        ({"format": ""}, {"format": ['"" is not a valid choice.']}),
        ({"format": ["csv"]}, {"format": ["\"['csv']\" is not a valid choice."]}),
        (
            {"format": "csv", "since": "2026-11-23T10:00:00Z", "until": "2026-11-23T09:59:59Z"},
            {"until": ["'until' must not be before 'since'."]},
        ),
        (
            {"format": "csv", "since": "2026-11-23T10:00:00"},
            {
                "since": [
                    "Give the offset of the time, e.g. 2026-11-23T10:00:00Z or "
                    "2026-11-23T11:00:00+01:00."
                ]
            },
        ),
        (
            {"format": "fhir", "until": "yesterday"},
            {
                "until": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
        ),
        (
            {"format": "fhir", "until": "2026-02-30T10:00:00Z"},
            {
                "until": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
        ),
        ({"format": "csv", "since": 12}, None),
    ],
)
def test_bad_requests_are_refused_field_by_field_and_nothing_is_enqueued(
    api_client, patient, body, fields
):
    response = post(api_client, patient, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["status"], error["code"], error["message"]) == (400, "invalid", "Invalid input.")
    if fields is not None:
        assert error["fields"] == fields
    assert not Export.objects.exists()
    assert not DBTaskResult.objects.exists()


def test_since_equal_to_until_is_one_instant(api_client, patient):
    moment = T0.isoformat()
    assert (
        post(api_client, patient, {"format": "csv", "since": moment, "until": moment}).status_code
        == 202
    )


def test_unknown_and_malformed_patients(api_client, patient):
    unknown = "6f1c2a9e-8d4b-4c3e-9f0a-1b2c3d4e5f60"
    response = api_client.post(f"/api/patients/{unknown}/exports/", {"format": "csv"})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "patient_not_found")
    response = api_client.post("/api/patients/123/exports/", {"format": "csv"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "'123' is not a valid patient uuid."
    assert not Export.objects.exists()


def test_the_browsable_api_offers_the_export_form(api_client, patient):
    response = api_client.get(exports_url(patient), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    for field in ('name="format"', 'name="since"', 'name="until"', 'value="fhir"', 'value="csv"'):
        assert field in html


def test_the_browsable_api_s_export_form_takes_its_date_pickers_times_in_time_zone(
    client, user, patient, settings
):
    """A browser's date picker sends `2026-12-02T17:50`, without an offset: a person's time,
    taken in TIME_ZONE. (JSON keeps asking for the offset: see the bad requests above.)"""
    settings.TIME_ZONE = "Europe/Paris"  # UTC+1 in December
    client.force_login(user)
    form = client.get(exports_url(patient), HTTP_ACCEPT="text/html").content.decode()
    assert re.search(r'<input name="since"[^>]*type="datetime-local"', form)

    response = client.post(
        exports_url(patient),
        {"format": "csv", "since": "2026-12-02T17:50", "until": "2026-12-02T18:50"},
        HTTP_ACCEPT="text/html",
    )

    assert response.status_code == 202
    export = Export.objects.get()
    assert (export.since, export.until) == (
        datetime(2026, 12, 2, 16, 50, tzinfo=UTC),
        datetime(2026, 12, 2, 17, 50, tzinfo=UTC),
    )


def test_the_export_operations_are_in_the_schema(api_client):
    document = api_client.get("/api/schema/", {"format": "json"}).json()
    paths = document["paths"]
    create = paths["/api/patients/{patient_uuid}/exports/"]["post"]
    assert set(create["responses"]) >= {"202", "400", "401", "403", "404"}
    result = paths["/api/exports/{export_id}/result/"]["get"]["responses"]
    assert set(result["200"]["content"]) == {"application/fhir+json", "text/csv"}
    for status in ("409", "410"):
        assert result[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    assert "/fhir/Observation" in paths
    search = paths["/fhir/Observation"]["get"]
    assert set(search["responses"]["200"]["content"]) == {"application/fhir+json"}
    assert [p["name"] for p in search["parameters"]] == [
        "_count",
        "_cursor",
        "code",
        "date",
        "patient",
    ]


def test_the_admin_shows_exports_read_only(admin_client, patient, media_root):
    export = ExportFactory(patient=patient)
    export_run(export_id=export.id)

    listing = admin_client.get("/admin/exports/export/")
    page = admin_client.get(f"/admin/exports/export/{export.id}/change/")

    assert listing.status_code == page.status_code == 200
    assert str(patient.uuid) in listing.content.decode()
    html = page.content.decode()
    assert f"exports/{export.id}.csv" in html
    assert f'href="exports/{export.id}.csv"' not in html  # nothing serves MEDIA_URL
    assert admin_client.get("/admin/exports/export/add/").status_code == 403
    assert admin_client.post(f"/admin/exports/export/{export.id}/delete/").status_code == 403
    assert Export.objects.filter(pk=export.pk).exists()
