"""The job's body (`export_run`) in-process against the real database: the files, the
pending -> running -> success transitions, the failures, the enqueueing, the expiry. The same
job through the real worker: test_e2e.py."""

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from exports import services
from exports.models import Export, ExportStatus
from exports.services import UNEXPECTED, export_request, export_run, exports_expire
from exports.tests.checks import check_csv_export, check_fhir_export, stored_readings
from exports.tests.factories import ExportFactory, UserFactory
from vitals.tests.factories import T0

pytestmark = pytest.mark.django_db


def files(media_root: Path) -> list[str]:
    return sorted(str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file())


@pytest.mark.parametrize("format", ["csv", "fhir"])
def test_an_export_writes_every_reading_and_records_its_success(patient, media_root, format):
    export = ExportFactory(patient=patient, format=format)

    done = export_run(export_id=export.id)

    export.refresh_from_db()
    assert done == export
    assert (export.status, export.row_count, export.error) == ("success", 23, "")
    assert export.created_at <= export.started_at <= export.finished_at <= timezone.now()
    assert export.expires_at - export.finished_at == timedelta(days=7)
    extension = {"csv": "csv", "fhir": "fhir.json"}[format]
    assert export.result.name == f"exports/{export.id}.{extension}"
    assert files(media_root) == [f"exports/{export.id}.{extension}"]
    text = Path(export.result.path).read_text(encoding="utf-8")
    if format == "csv":
        check_csv_export(text, patient, stored_readings(patient))
    else:
        check_fhir_export(json.loads(text), patient, stored_readings(patient))


@pytest.mark.parametrize("format", ["csv", "fhir"])
def test_since_and_until_bound_the_export_inclusively(patient, media_root, format):
    since, until = T0 + timedelta(seconds=15), T0 + timedelta(seconds=45)
    export = ExportFactory(patient=patient, format=format, since=since, until=until)

    export_run(export_id=export.id)

    export.refresh_from_db()
    expected = stored_readings(patient, measured_at__gte=since, measured_at__lte=until)
    # Both bounds are readings' times, and in.
    assert (expected[0].measured_at, expected[-1].measured_at) == (since, until)
    assert export.row_count == len(expected) == 7
    text = Path(export.result.path).read_text(encoding="utf-8")
    if format == "csv":
        check_csv_export(text, patient, expected)
    else:
        check_fhir_export(json.loads(text), patient, expected)


def test_an_export_without_readings_succeeds_with_an_empty_file(patient, media_root):
    export = ExportFactory(patient=patient, since=T0 + timedelta(days=1))
    export_run(export_id=export.id)
    export.refresh_from_db()
    assert (export.status, export.row_count) == ("success", 0)
    assert Path(export.result.path).read_text().splitlines() == [
        "patient_uuid,measured_at,pulse_per_min,resp_rate_per_min,systolic_mmhg,diastolic_mmhg,"
        "spo2_percent,temperature_celsius,on_oxygen,consciousness_acvpu,artefact,news2_score,"
        "news2_risk,news2_spo2_scale,received_at,map_mmhg,etco2_mmhg,news2_missing"
    ]


def test_the_status_moves_pending_running_success(patient, media_root, monkeypatch):
    """The status as another reader of the database sees it, while the file is written."""
    export = ExportFactory(patient=patient)
    assert export.status == "pending"
    seen_while_writing = []
    real = services.csv_write

    def spy(out, **kwargs):
        row = Export.objects.values("status", "started_at", "finished_at").get(pk=export.pk)
        seen_while_writing.append(row)
        return real(out, **kwargs)

    monkeypatch.setattr(services, "csv_write", spy)
    export_run(export_id=export.id)

    [during] = seen_while_writing
    assert during["status"] == "running"
    assert during["started_at"] is not None
    assert during["finished_at"] is None
    assert Export.objects.get(pk=export.pk).status == "success"


def test_an_export_runs_once(patient, media_root, caplog):
    export = ExportFactory(patient=patient)
    export_run(export_id=export.id)
    finished = Export.objects.get(pk=export.pk).finished_at

    with caplog.at_level(logging.WARNING, logger="exports.services"):
        assert export_run(export_id=export.id) is None

    assert Export.objects.get(pk=export.pk).finished_at == finished
    assert [r.getMessage() for r in caplog.records] == ["export not pending: not run"]


def test_a_patient_deleted_before_the_export_ran_makes_it_fail_with_a_message(patient, media_root):
    export = ExportFactory(patient=patient)
    patient_uuid = patient.uuid
    patient.delete()

    export_run(export_id=export.id)

    export.refresh_from_db()
    assert export.status == "failure"
    assert export.error == f"The patient {patient_uuid} was deleted before the export ran."
    assert (export.patient, export.patient_uuid, export.row_count) == (None, patient_uuid, None)
    assert export.started_at <= export.finished_at
    assert export.result.name == ""
    assert files(media_root) == []


def test_a_patient_deleted_while_the_export_ran_makes_it_fail_and_leaves_no_file(
    patient, media_root, monkeypatch
):
    export = ExportFactory(patient=patient, format="fhir")
    real = services.fhir_write

    def write_then_delete(out, **kwargs):
        count = real(out, **kwargs)
        assert count == 23  # the file was written...
        patient.delete()  # ...when the patient went
        return count

    monkeypatch.setattr(services, "fhir_write", write_then_delete)
    export_run(export_id=export.id)

    export.refresh_from_db()
    assert (export.status, export.row_count) == ("failure", None)
    assert export.error == f"The patient {export.patient_uuid} was deleted while the export ran."
    assert files(media_root) == []


def test_an_unexpected_error_fails_the_export_and_reaches_the_worker(
    patient, media_root, monkeypatch, caplog
):
    export = ExportFactory(patient=patient)

    def broken(out, **kwargs):
        out.write("half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(services, "csv_write", broken)
    with (
        caplog.at_level(logging.ERROR, logger="exports.services"),
        pytest.raises(OSError, match="No space left"),
    ):
        export_run(export_id=export.id)

    export.refresh_from_db()
    assert (export.status, export.error) == ("failure", UNEXPECTED)
    assert files(media_root) == []  # the partial file is gone
    [record] = caplog.records
    assert record.getMessage() == "export failed unexpectedly"
    assert record.export_id == str(export.id)


def test_stopping_the_worker_mid_export_says_so(patient, media_root, monkeypatch):
    """db_worker's second SIGTERM raises SystemExit in the task."""
    export = ExportFactory(patient=patient)
    monkeypatch.setattr(services, "csv_write", lambda out, **kwargs: exit(1))

    with pytest.raises(SystemExit):
        export_run(export_id=export.id)

    export.refresh_from_db()
    assert export.status == "failure"
    assert export.error == "The worker was stopped before the export finished; request it again."


def test_a_request_enqueues_its_job_once_the_transaction_commits(
    patient, django_capture_on_commit_callbacks, settings
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        export = export_request(
            user=user, patient=patient, format="fhir", since=T0, until=T0 + timedelta(hours=1)
        )
        assert not DBTaskResult.objects.exists()  # not before the commit
    assert len(callbacks) == 1

    [job] = DBTaskResult.objects.all()
    assert job.task_path == "exports.tasks.export_task"
    assert job.args_kwargs == {"args": [str(export.id)], "kwargs": {}}
    assert job.status == "READY"
    export.refresh_from_db()
    assert export.task_id == str(job.id)
    assert (export.status, export.format, export.requested_by, export.patient) == (
        "pending",
        "fhir",
        user,
        patient,
    )
    assert (export.since, export.until) == (T0, T0 + timedelta(hours=1))
    assert export.expires_at - export.created_at < settings.EXPORT_RESULT_TTL + timedelta(seconds=5)


# --- expiry ------------------------------------------------------------------------------------
def test_expired_exports_and_their_files_are_deleted_and_nothing_else(patient, media_root):
    now = timezone.now()
    fresh = ExportFactory(patient=patient)
    export_run(export_id=fresh.id)
    old = ExportFactory(patient=patient, format="fhir")
    export_run(export_id=old.id)
    old.refresh_from_db()
    partial = Path(old.result.path).with_name(f"{fresh.id}-killed.csv.part")
    stale = ExportFactory(patient=patient, status=ExportStatus.RUNNING)  # its worker was killed
    stale_part = media_root / "exports" / f"{stale.id}.csv.part"
    stale_part.write_text("half")
    partial.write_text("not an export's: kept")
    Export.objects.filter(pk__in=[old.pk, stale.pk]).update(expires_at=now)

    assert exports_expire(now=now + timedelta(seconds=1)) == 2

    assert list(Export.objects.values_list("id", flat=True)) == [fresh.id]
    assert files(media_root) == sorted([f"exports/{fresh.id}.csv", f"exports/{partial.name}"])


def test_every_export_run_sweeps_the_expired_ones(patient, media_root):
    expired = ExportFactory(patient=patient)
    export_run(export_id=expired.id)
    Export.objects.filter(pk=expired.pk).update(expires_at=timezone.now())

    export_run(export_id=ExportFactory(patient=patient).id)

    assert not Export.objects.filter(pk=expired.pk).exists()
    assert len(files(media_root)) == 1


def test_expire_exports_command(patient, media_root, capsys):
    ExportFactory(patient=patient, expires_at=timezone.now())
    ExportFactory(patient=patient)
    call_command("expire_exports")
    assert capsys.readouterr().out == "Deleted 1 expired export(s).\n"
    assert Export.objects.count() == 1
