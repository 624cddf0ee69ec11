"""Reads of exports, and of the readings an export writes."""

import logging
import operator
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from exports.errors import (
    ExportExpired,
    ExportFailed,
    ExportNotFound,
    ExportNotReady,
    ExportResultMissing,
)
from exports.fhir import FHIR_JSON, KINDS, EntryWriter, Reading, iso
from exports.fhir_search import TimeRange
from exports.models import Export, ExportFormat, ExportStatus
from patients.models import Patient
from vitals.selectors import reading_list
from vitals.signs import SIGN_KEYS

logger = logging.getLogger(__name__)

# The fields of a reading that the export formats write (exports/writers.py).
READING_FIELDS = (
    "measured_at",
    *SIGN_KEYS,
    "on_oxygen",
    "consciousness",
    "artefact",
    "news2_score",
    "news2_risk",
    "news2_missing",
    "spo2_scale",
    "received_at",
)


def export_list(*, user: AbstractBaseUser, patient: Patient | None = None) -> QuerySet[Export]:
    """The exports `user` may see, newest first: their own; every one for staff."""
    exports = Export.objects.select_related("requested_by")
    if not user.is_staff:
        exports = exports.filter(requested_by=user)
    if patient is not None:
        exports = exports.filter(patient_uuid=patient.uuid)
    return exports.order_by("-created_at", "-id")


def export_get(*, export_id: str | uuid.UUID, user: AbstractBaseUser) -> Export:
    """One export `user` may see; ExportNotFound (404) for a malformed id, an unknown one and
    someone else's alike, so that ids cannot be probed."""
    try:
        parsed = export_id if isinstance(export_id, uuid.UUID) else uuid.UUID(str(export_id))
        return export_list(user=user).get(pk=parsed)
    except (ValueError, Export.DoesNotExist):
        raise ExportNotFound(f"No export with id {export_id}.") from None


def export_readings(
    *,
    patient: Patient,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_size: int = 2000,
) -> Iterator[Reading]:
    """A patient's readings, oldest first, as rows of READING_FIELDS fetched `chunk_size` at a
    time (a server-side cursor on PostgreSQL; run it in a transaction there, or the server
    materialises the whole result first)."""
    return (
        reading_list(patient=patient, since=since, until=until)
        .order_by("measured_at")
        .values_list(*READING_FIELDS, named=True)
        .iterator(chunk_size=chunk_size)
    )


def _has_kind(key: str) -> Q:
    """The readings that have an Observation of this kind: none of its values null."""
    return Q(**{f"{name}__isnull": False for name in KINDS[key].fields})


@dataclass
class ObservationPage:
    """One page of a FHIR Observation search: the entries (JSON text), how many match in
    all, and where the next page starts (None on the last)."""

    entries: list[str]
    total: int
    next_cursor: tuple[datetime, int] | None


def observation_search(
    *,
    patient: Patient,
    kinds: list[str],
    during: TimeRange,
    count: int,
    cursor: tuple[datetime, int] | None = None,
) -> ObservationPage:
    """A page of `count` Observations of `kinds` (exports/fhir.py) of a patient's readings
    measured `during`, oldest first, each reading's in the fixed order of KINDS; from `cursor`
    (the reading's time and how many of its entries the pages before took). A reading has the
    Observations of the signs it measured, and NEWS2 when it was scored."""
    if not kinds:
        return ObservationPage(entries=[], total=0, next_cursor=None)
    has = {key: _has_kind(key) for key in kinds}
    readings = reading_list(patient=patient, since=during.start)
    if during.end is not None:
        readings = readings.filter(measured_at__lt=during.end)
    # Only the readings with an Observation of these kinds (a partial reading may have none).
    readings = readings.filter(reduce(operator.or_, has.values()))
    counts = readings.aggregate(**{f"n_{key}": Count("pk", filter=q) for key, q in has.items()})
    total = sum(counts.values())

    start, skip = cursor or (None, 0)
    if start is not None:
        readings = readings.filter(measured_at__gte=start)
    writer = EntryWriter(patient_uuid=patient.uuid, kinds=kinds, search=True)
    entries: list[str] = []
    # Every reading has at least one entry of these kinds: count + 2 readings fill a page and
    # tell whether another follows, even when the first one's entries were all taken.
    rows = readings.order_by("measured_at").values_list(*READING_FIELDS, named=True)
    for reading in rows[: count + 2]:
        first = skip if reading.measured_at == start else 0
        for index, text in enumerate(writer.entries(reading)[first:], start=first):
            if len(entries) == count:
                return ObservationPage(entries, total, (reading.measured_at, index))
            entries.append(text)
    return ObservationPage(entries, total, None)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    content_type: str
    filename: str


CONTENT_TYPES = {ExportFormat.FHIR: FHIR_JSON, ExportFormat.CSV: "text/csv; charset=utf-8"}


def export_result_get(*, export: Export, now: datetime | None = None) -> ExportResult:
    """The file of a successful export: where it is, its type and a download name (the
    patient's uuid, not their name: file names end up in logs and download folders).

    ExportExpired (410) after `expires_at`, ExportNotReady (409) while pending or running,
    ExportFailed (409) after a failure, ExportResultMissing (500) if the file is not there."""
    if export.expires_at <= (now or timezone.now()):
        raise ExportExpired(f"The export {export.id} expired at {iso(export.expires_at)}.")
    if export.status == ExportStatus.FAILURE:
        raise ExportFailed(f"The export {export.id} failed: {export.error}")
    if export.status != ExportStatus.SUCCESS:
        raise ExportNotReady(
            f"The export {export.id} is {export.status}: its result is not ready yet."
        )
    path = Path(export.result.path)
    if not path.is_file():
        logger.error(
            "export result missing (do the web server and the worker share MEDIA_ROOT?)",
            extra={"export_id": str(export.id), "path": str(path)},
        )
        raise ExportResultMissing
    moment = export.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ExportResult(
        path=path,
        content_type=CONTENT_TYPES[export.format],
        filename=f"vitals-{export.patient_uuid}-{moment}.{export.extension}",
    )
