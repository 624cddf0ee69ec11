"""Exports through the real worker: `manage.py db_worker` as a child process (one for the
module), the API in the test, the real database between them. Submit, poll until done, fetch,
compare with the database; and the failure path."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
from django.db import transaction

from core.process import process_stop
from exports.tests.checks import check_csv_export, check_fhir_export, stored_readings
from exports.tests.factories import readings_create
from patients.tests.factories import PatientFactory
from testing.database import database_url
from testing.processes import json_lines, start_manage, wait_for_log

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@dataclass
class Worker:
    process: Popen
    log: Path
    media_root: Path


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Worker]:
    """`manage.py db_worker` on the test database, polling every 0.1 s, its files in a
    MEDIA_ROOT of its own; stopped (SIGTERM) at the end of the module."""
    media_root = tmp_path_factory.mktemp("media")
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with django_db_blocker.unblock():
        url = database_url()
    process = start_manage(
        "db_worker",
        "--no-reload",
        "--no-startup-delay",
        "--interval",
        "0.1",
        "--worker-id",
        "e2e-worker",
        log=log,
        DATABASE_URL=url,
        MEDIA_ROOT=str(media_root),
    )
    try:
        wait_for_log(log, "Starting worker worker_id=e2e-worker", process, timeout=30)
        yield Worker(process, log, media_root)
    finally:
        process_stop(process)
    assert process.returncode == 0, log.read_text()


@pytest.fixture
def shared_media(worker, settings) -> Path:
    """The test's MEDIA_ROOT is the worker's: the API hands out the files the worker wrote."""
    settings.MEDIA_ROOT = str(worker.media_root)
    return worker.media_root


def poll(client, requested: dict, timeout: float = 30) -> list[dict]:
    """The export's status from the request's answer until it is final; every distinct status
    seen, in order."""
    seen = [requested]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(requested["status_url"]).json()
        if body["status"] != seen[-1]["status"]:
            seen.append(body)
        if body["status"] in ("success", "failure"):
            return seen
        time.sleep(0.05)
    pytest.fail(f"export not done within {timeout}s: {seen}")


def test_exports_run_by_the_worker_from_request_to_file(api_client, roles, shared_media, worker):
    patient = PatientFactory(name="bob")
    readings_create(patient, 400)
    started = time.monotonic()

    requested = {
        format: api_client.post(
            f"/api/patients/{patient.uuid}/exports/", {"format": format}, format="json"
        )
        for format in ("fhir", "csv")
    }
    assert {f: r.status_code for f, r in requested.items()} == {"fhir": 202, "csv": 202}

    for format, response in requested.items():
        body = response.json()
        assert body["status"] == "pending"
        assert response["Location"] == body["status_url"]
        statuses = poll(api_client, body)
        # pending, (running: too brief to be seen every time), success
        assert [s["status"] for s in statuses] in (
            ["pending", "success"],
            ["pending", "running", "success"],
        )
        final = statuses[-1]
        assert (final["row_count"], final["error"]) == (400, "")
        assert final["created_at"] <= final["started_at"] <= final["finished_at"]

        result = api_client.get(body["result_url"])
        assert result.status_code == 200
        content = b"".join(result.streaming_content).decode()
        readings = stored_readings(patient)
        if format == "fhir":
            assert result["Content-Type"] == "application/fhir+json"
            check_fhir_export(json.loads(content), patient, readings)
        else:
            assert result["Content-Type"] == "text/csv; charset=utf-8"
            check_csv_export(content, patient, readings)
    assert time.monotonic() - started < 30
    finished = [
        line for line in json_lines(worker.log.read_text()) if line["message"] == "export finished"
    ]
    assert {line["export_id"] for line in finished} >= {r.json()["id"] for r in requested.values()}


def test_an_export_whose_patient_is_deleted_meanwhile_fails_with_a_message(
    api_client, roles, shared_media, worker
):
    """The patient goes in the transaction that asks for the export: by the time the worker
    runs it, there is no patient."""
    patient = PatientFactory(name="carol")
    readings_create(patient, 5)
    with transaction.atomic():
        response = api_client.post(
            f"/api/patients/{patient.uuid}/exports/", {"format": "fhir"}, format="json"
        )
        patient.delete()
    assert response.status_code == 202

    final = poll(api_client, response.json())[-1]

    assert final["status"] == "failure"
    assert final["error"] == f"The patient {final['patient']} was deleted before the export ran."
    assert final["row_count"] is None
    result = api_client.get(response.json()["result_url"])
    assert (result.status_code, result.json()["error"]["code"]) == (409, "export_failed")
    assert not list(shared_media.rglob(f"{final['id']}*"))
