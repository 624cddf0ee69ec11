"""Writes of vital-sign readings."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from patients.models import Patient
from patients.services import patient_bulk_get_or_create
from vitals.contract import Reading
from vitals.models import PatientMetric


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    patients: int


def metric_bulk_store(
    *, readings: Sequence[Reading], received_at: datetime | None = None
) -> StoreResult:
    """Store a batch of readings in one transaction: exactly once, whatever is re-delivered.

    Duplicates inside the batch are dropped first (the first copy wins); readings already in
    the database are skipped by a look-up on the unique (patient, measured_at) index, and a
    concurrent writer that slips in between is absorbed by INSERT ... ON CONFLICT DO NOTHING.
    Each patient's `latest_metric` is brought up to date in the same transaction, so that the
    ward list never points at a reading that is not committed.
    """
    unique: dict[tuple, Reading] = {}
    for reading in readings:
        unique.setdefault((reading.patient_uuid, reading.measured_at), reading)
    if not unique:
        return StoreResult(stored=0, duplicates=len(readings), patients=0)
    received_at = received_at or timezone.now()

    with transaction.atomic():
        names = {r.patient_uuid: r.patient_name for r in unique.values()}
        patient_ids = patient_bulk_get_or_create(names_by_uuid=names)
        times = [r.measured_at for r in unique.values()]
        existing = set(
            PatientMetric.objects.filter(
                patient_id__in=patient_ids.values(),
                measured_at__gte=min(times),
                measured_at__lte=max(times),
            ).values_list("patient_id", "measured_at")
        )
        new = [
            PatientMetric(
                patient_id=patient_ids[r.patient_uuid],
                measured_at=r.measured_at,
                pulse=r.pulse,
                resp_rate=r.resp_rate,
                systolic=r.systolic,
                diastolic=r.diastolic,
                spo2=r.spo2,
                temperature=r.temperature,
                received_at=received_at,
            )
            for r in unique.values()
            if (patient_ids[r.patient_uuid], r.measured_at) not in existing
        ]
        PatientMetric.objects.bulk_create(new, ignore_conflicts=True)
        touched = {m.patient_id for m in new}
        if touched:
            patient_latest_metric_refresh(patient_ids=touched)
    return StoreResult(
        stored=len(new), duplicates=len(readings) - len(new), patients=len(patient_ids)
    )


def patient_latest_metric_refresh(*, patient_ids: set[int]) -> None:
    """Point each patient's `latest_metric` at their newest reading (one UPDATE).

    Computed from the table, not from the batch, so it is right whatever order readings
    arrive in (a late or replayed reading never replaces a newer one).
    """
    newest = (
        PatientMetric.objects.filter(patient_id=OuterRef("pk"))
        .order_by("-measured_at")
        .values("pk")[:1]
    )
    Patient.objects.filter(pk__in=patient_ids).update(latest_metric=Subquery(newest))
