"""Writes of exports: requesting one, running it (the background job's body), expiring them.

The lifecycle: `export_request` creates the export (pending) and, once the transaction has
committed, enqueues `exports.tasks.export_task`; `manage.py db_worker` runs it, which calls
`export_run`: pending -> running -> success (the file under MEDIA_ROOT/exports/) or failure
(the reason in `error`). `exports_expire` deletes the exports older than EXPORT_RESULT_TTL
and their files; the worker runs it after every export, `manage.py expire_exports` on demand.
"""

import contextlib
import logging
import os
import uuid
from datetime import datetime
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from exports.errors import ExportFailed
from exports.models import Export, ExportFormat, ExportStatus
from exports.selectors import export_readings
from exports.writers import csv_write, fhir_write
from patients.models import Patient

logger = logging.getLogger(__name__)

WORKER_STOPPED = "The worker was stopped before the export finished; request it again."
UNEXPECTED = "The export failed unexpectedly (the worker's log says why); request it again."


def export_file_name(export: Export) -> str:
    """The file of an export, under MEDIA_ROOT; "<name>.part" while it is being written."""
    return f"exports/{export.id}.{export.extension}"


def _storage():
    return Export._meta.get_field("result").storage


def export_request(
    *,
    user: AbstractBaseUser,
    patient: Patient,
    format: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Export:
    """Create a pending export and enqueue its job when the transaction commits (the worker
    must not look for an export that is not committed yet)."""
    # Imported here: the task module imports this one.
    from exports.tasks import export_task

    with transaction.atomic():
        export = Export.objects.create(
            requested_by=user,
            patient=patient,
            patient_uuid=patient.uuid,
            format=format,
            since=since,
            until=until,
            expires_at=timezone.now() + settings.EXPORT_RESULT_TTL,
        )
        transaction.on_commit(partial(_export_enqueue, export_task, export.id))
    logger.info(
        "export requested",
        extra={
            "export_id": str(export.id),
            "patient_uuid": str(patient.uuid),
            "format": format,
            "username": user.get_username(),
        },
    )
    return export


def _export_enqueue(task, export_id: uuid.UUID) -> None:
    result = task.enqueue(str(export_id))
    Export.objects.filter(pk=export_id).update(task_id=str(result.id))


def export_run(*, export_id: uuid.UUID) -> Export | None:
    """Run a pending export (the job's body): write its file, record the outcome. An export
    that is not pending (deleted, or run already) is left alone; returns None then."""
    started = timezone.now()
    claimed = Export.objects.filter(pk=export_id, status=ExportStatus.PENDING).update(
        status=ExportStatus.RUNNING, started_at=started
    )
    if not claimed:
        logger.warning("export not pending: not run", extra={"export_id": str(export_id)})
        return None
    export = Export.objects.select_related("patient").get(pk=export_id)
    context = {"export_id": str(export.id), "patient_uuid": str(export.patient_uuid)}
    logger.info("export started", extra={**context, "format": export.format})
    name = export_file_name(export)
    path = Path(_storage().path(name))
    part = path.with_name(path.name + ".part")
    try:
        count = _export_write(export, part)
        # A patient deleted while the file was written: its data must not leave.
        if not Patient.objects.filter(pk=export.patient_id).exists():
            raise ExportFailed(
                f"The patient {export.patient_uuid} was deleted while the export ran."
            )
        os.replace(part, path)
    except ExportFailed as exc:
        part.unlink(missing_ok=True)
        _export_fail(export, exc.message, context)
        _expire_after_run()
        return export
    except BaseException as exc:
        part.unlink(missing_ok=True)
        stopped = isinstance(exc, SystemExit | KeyboardInterrupt)
        if not stopped:
            logger.exception("export failed unexpectedly", extra=context)
        with contextlib.suppress(Exception):  # the database may be why it failed
            _export_fail(export, WORKER_STOPPED if stopped else UNEXPECTED, context)
        raise

    finished = timezone.now()
    updated = Export.objects.filter(pk=export.id).update(
        status=ExportStatus.SUCCESS,
        result=name,
        row_count=count,
        finished_at=finished,
        expires_at=finished + settings.EXPORT_RESULT_TTL,
    )
    if not updated:  # expired and deleted while it ran (a very long run): nobody wants it
        path.unlink(missing_ok=True)
        logger.warning("export deleted while it ran: file removed", extra=context)
        return None
    logger.info(
        "export finished",
        extra={**context, "rows": count, "seconds": round((finished - started).total_seconds(), 3)},
    )
    _expire_after_run()
    export.refresh_from_db()
    return export


def _expire_after_run() -> None:
    """The worker's sweep after each export: exports only pile up where exports are made, so
    this keeps MEDIA_ROOT bounded without a scheduler. Its failure is not the export's."""
    try:
        exports_expire()
    except Exception:
        logger.exception("expiring exports failed")


def _export_write(export: Export, part: Path) -> int:
    """Write the export's file to `part`; returns the number of readings."""
    patient = export.patient
    if patient is None:
        raise ExportFailed(f"The patient {export.patient_uuid} was deleted before the export ran.")
    part.parent.mkdir(parents=True, exist_ok=True)
    # On PostgreSQL the readings come through a server-side cursor, which streams only inside a
    # transaction (outside one, the server materialises the whole result first). Not on
    # SQLite: its transactions take the write lock (IMMEDIATE), which would stop the consumer
    # for the whole export; its cursor streams anyway, from a consistent WAL snapshot.
    snapshot = transaction.atomic() if connection.vendor != "sqlite" else contextlib.nullcontext()
    with snapshot, part.open("w", encoding="utf-8", newline="") as out:
        readings = export_readings(patient=patient, since=export.since, until=export.until)
        if export.format == ExportFormat.CSV:
            return csv_write(out, patient_uuid=patient.uuid, readings=readings)
        return fhir_write(
            out,
            patient_uuid=patient.uuid,
            patient_name=patient.name,
            readings=readings,
            bundle_id=export.id,
            timestamp=timezone.now(),
        )


def _export_fail(export: Export, message: str, context: dict) -> None:
    export.status = ExportStatus.FAILURE
    export.error = message
    export.finished_at = timezone.now()
    Export.objects.filter(pk=export.id).update(
        status=export.status, error=message, finished_at=export.finished_at
    )
    logger.warning("export failed", extra={**context, "error": message})


def exports_expire(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Delete the exports whose `expires_at` has passed, and their files (the finished one and
    any partial one a killed worker left); returns how many. Safe to run at any time, by
    several processes at once."""
    now = now or timezone.now()
    storage = _storage()
    deleted = 0
    expired = Export.objects.filter(expires_at__lte=now).only("id", "format")
    while batch := list(expired[:batch_size]):
        for export in batch:
            name = export_file_name(export)
            storage.delete(name)  # no error when there is no such file
            storage.delete(f"{name}.part")
        deleted += Export.objects.filter(pk__in=[e.pk for e in batch]).delete()[0]
    if deleted:
        logger.info("exports expired", extra={"deleted": deleted})
    return deleted
