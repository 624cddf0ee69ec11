"""Writes of units, beds and admissions: admit, transfer, discharge, AUTO_ADMIT, the demo unit.

`by` is the clinician; None for a system, which `actor` then names in the audit trail (the
device gateway's ADT: "HL7 ADT A01 <control id>", see gateway/adt.py).

The database decides races: two admissions to one bed (or of one patient) at once meet the
partial unique indexes of units/models.py; the loser's IntegrityError, caught inside its
transaction, becomes the domain error (409).
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from patients.models import Patient
from patients.services import patients_lock
from units.errors import AlreadyAdmitted, BedOccupied, NotAdmitted
from units.models import Admission, Bed, Unit
from vitals.models import AlarmOff, AuditEvent
from vitals.services import (
    alarm_switch_on,
    audit_event_record,
    patient_alarms_resolve,
    patient_monitoring_end,
)
from vitals.tile_services import patient_tiles_refresh

logger = logging.getLogger(__name__)

DISCHARGED = "discharged"  # the reason a discharge gives the alarms it resolves
AUTO_ADMIT_REASON = "AUTO_ADMIT: first reading of a monitor"

DEMO_UNIT_CODE = "icu"
DEMO_UNIT_NAME = "Intensive care unit"
DEMO_BEDS = 8


def _admission_values(admission: Admission) -> dict:
    return {
        "admission": admission.pk,
        "unit": admission.bed.unit.code,
        "bed": admission.bed.label,
        "admitted_at": admission.admitted_at.isoformat(),
        "reason": admission.reason,
    }


def _admission_open(
    *, patient: Patient, bed: Bed, by: AbstractBaseUser | None, reason: str, at: datetime
) -> Admission:
    """Insert the open admission, in a savepoint: a race lost on either unique index is the
    domain error, checked again after the savepoint rolled back."""
    try:
        with transaction.atomic():
            admission = Admission.objects.create(
                patient=patient,
                bed=bed,
                admitted_at=at,
                admitted_by=by if by is not None and by.pk is not None else None,
                reason=reason,
            )
    except IntegrityError:
        if Admission.objects.filter(patient=patient, discharged_at__isnull=True).exists():
            raise AlreadyAdmitted(f"Patient {patient.uuid} is already admitted.") from None
        raise BedOccupied(f"Bed {bed.label} of {bed.unit.code} is occupied.") from None
    if patient.monitoring_ended_at is not None:
        # Admitted again, monitored again: a silence raises `no_data` once more.
        Patient.objects.filter(pk=patient.pk).update(
            monitoring_ended_at=None, monitoring_ended_by=None
        )
        patient.monitoring_ended_at = patient.monitoring_ended_by = None
        patient_tiles_refresh(patient_ids=[patient.pk])
    return admission


def _bed_check_free(bed: Bed) -> None:
    if Admission.objects.filter(bed=bed, discharged_at__isnull=True).exists():
        raise BedOccupied(f"Bed {bed.label} of {bed.unit.code} is occupied.")


def _admission_check(*, patient: Patient, bed: Bed) -> None:
    """The common case's answers, before writing; a race past them meets the indexes."""
    if Admission.objects.filter(patient=patient, discharged_at__isnull=True).exists():
        raise AlreadyAdmitted(f"Patient {patient.uuid} is already admitted: transfer them.")
    _bed_check_free(bed)


def admission_create(
    *,
    patient: Patient,
    bed: Bed,
    by: AbstractBaseUser | None,
    reason: str = "",
    actor: str = "",
) -> Admission:
    """Admit a patient to a free bed (audited). 409 `already_admitted` if they are in a bed
    (transfer them), `bed_occupied` if someone else is in this one."""
    with transaction.atomic():
        patients_lock(patient_ids=[patient.pk])  # the patient first (the writers' lock order)
        _admission_check(patient=patient, bed=bed)
        admission = _admission_open(
            patient=patient, bed=bed, by=by, reason=reason, at=timezone.now()
        )
        audit_event_record(
            user=by,
            action=AuditEvent.Action.PATIENT_ADMIT,
            obj=admission,
            patient=patient,
            before=None,
            after=_admission_values(admission),
            actor=actor,
        )
    logger.info(
        "patient admitted",
        extra={"patient_uuid": str(patient.uuid), "unit": bed.unit.code, "bed": bed.label},
    )
    return admission


def _open_admission_lock(patient: Patient) -> Admission:
    admission = (
        Admission.objects.select_for_update(of=("self",))  # not its bed's and unit's rows
        .select_related("bed__unit")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )
    if admission is None:
        raise NotAdmitted(f"Patient {patient.uuid} is not admitted.")
    return admission


def _admission_close(
    *, admission: Admission, by: AbstractBaseUser | None, end_reason: str, reason: str, at: datetime
) -> None:
    admission.discharged_at = max(at, admission.admitted_at)
    admission.discharged_by = by if by is not None and by.pk is not None else None
    admission.end_reason, admission.discharge_reason = end_reason, reason
    admission.save(
        update_fields=["discharged_at", "discharged_by", "end_reason", "discharge_reason"]
    )


def admission_transfer(
    *,
    patient: Patient,
    bed: Bed,
    by: AbstractBaseUser | None,
    reason: str = "",
    actor: str = "",
) -> Admission:
    """Move an admitted patient to another free bed (any unit): the open admission ends
    ("transfer") and the new one begins at the same moment (audited). 409 `not_admitted`,
    `bed_occupied` (their own bed included)."""
    with transaction.atomic():
        patients_lock(patient_ids=[patient.pk])  # the patient first (the writers' lock order)
        current = _open_admission_lock(patient)
        if current.bed_id == bed.pk:
            raise BedOccupied(f"Patient {patient.uuid} is in bed {bed.label} already.")
        _bed_check_free(bed)
        now = timezone.now()
        _admission_close(
            admission=current, by=by, end_reason=Admission.EndReason.TRANSFER, reason=reason, at=now
        )
        admission = _admission_open(patient=patient, bed=bed, by=by, reason=reason, at=now)
        audit_event_record(
            user=by,
            action=AuditEvent.Action.PATIENT_TRANSFER,
            obj=admission,
            patient=patient,
            before=_admission_values(current),
            after=_admission_values(admission),
            actor=actor,
        )
    logger.info(
        "patient transferred",
        extra={
            "patient_uuid": str(patient.uuid),
            "from_bed": str(current.bed),
            "unit": bed.unit.code,
            "bed": bed.label,
        },
    )
    return admission


def admission_discharge(
    *, patient: Patient, by: AbstractBaseUser | None, reason: str = "", actor: str = ""
) -> Admission:
    """Discharge an admitted patient (audited): the admission ends, every open alarm of theirs
    is resolved with the reason "discharged", every alarm switched off is switched on again
    (ALARM OFF is the stay's team's decision: a later stay starts with every alarm on), and
    their monitoring ends (no `no_data` for the monitor taken off). Their readings, alarms and
    exports stay. 409 `not_admitted`."""
    with transaction.atomic():
        # The patient first, then their alarms, as the consumer's batch takes them: the other
        # way round, a discharge and a batch would deadlock (patients_lock).
        patients_lock(patient_ids=[patient.pk])
        admission = _open_admission_lock(patient)
        now = timezone.now()
        _admission_close(
            admission=admission,
            by=by,
            end_reason=Admission.EndReason.DISCHARGE,
            reason=reason,
            at=now,
        )
        resolved = patient_alarms_resolve(patient=patient, at=now, reason=DISCHARGED)
        audit_event_record(
            user=by,
            action=AuditEvent.Action.PATIENT_DISCHARGE,
            obj=admission,
            patient=patient,
            before=_admission_values(admission),
            after={
                "discharged_at": admission.discharged_at.isoformat(),
                "reason": reason,
                "alarms_resolved": sorted(event.alarm_id for event in resolved),
            },
            actor=actor,
        )
        for kind in (
            AlarmOff.objects.filter(patient=patient).order_by("kind").values_list("kind", flat=True)
        ):
            alarm_switch_on(patient=patient, kind=kind, user=by, actor=actor)
        patient_monitoring_end(patient=patient, user=by, actor=actor)
    logger.info(
        "patient discharged",
        extra={"patient_uuid": str(patient.uuid), "unit": admission.bed.unit.code},
    )
    return admission


# Patients AUTO_ADMIT found no free bed for, logged once per process.
_NO_BED_LOGGED: set[str] = set()


def patients_auto_admit(*, patient_ids: Sequence[int], received_at: datetime) -> list[Admission]:
    """The hook vitals calls after each batch of readings (units/apps.py registers it): with
    AUTO_ADMIT on, each patient never admitted before gets the first free bed (by position) of
    DEFAULT_UNIT. One query when all are known; a discharged patient is not taken back (a
    clinician's discharge stands: they wait under "Unassigned monitors"). No free bed, or no
    such unit: they wait there too (logged once)."""
    if not settings.AUTO_ADMIT or not patient_ids:
        return []
    known = set(
        Admission.objects.filter(patient_id__in=patient_ids).values_list("patient_id", flat=True)
    )
    newcomers = [pk for pk in patient_ids if pk not in known]
    if not newcomers:
        return []
    free = list(
        Bed.objects.select_related("unit")
        .filter(unit__code=settings.DEFAULT_UNIT)
        .exclude(Exists(Admission.objects.filter(bed=OuterRef("pk"), discharged_at__isnull=True)))
        .order_by("position")
    )
    patients = Patient.objects.in_bulk(newcomers)
    admitted = []
    for pk in newcomers:
        while free:
            bed = free.pop(0)
            try:
                admitted.append(
                    admission_create(
                        patient=patients[pk], bed=bed, by=None, reason=AUTO_ADMIT_REASON
                    )
                )
                break
            except BedOccupied:
                continue  # taken meanwhile (another consumer, a clinician): the next one
            except AlreadyAdmitted:
                free.insert(0, bed)
                break
        else:
            if str(patients[pk].uuid) not in _NO_BED_LOGGED:
                _NO_BED_LOGGED.add(str(patients[pk].uuid))
                logger.warning(
                    "AUTO_ADMIT: no free bed; the patient waits under unassigned monitors",
                    extra={"patient_uuid": str(patients[pk].uuid), "unit": settings.DEFAULT_UNIT},
                )
    return admitted


def unit_demo_ensure(
    *, code: str = DEMO_UNIT_CODE, name: str = DEMO_UNIT_NAME, beds: int = DEMO_BEDS
) -> Unit:
    """The demo unit of `make run` (run_dev): created with beds 1..`beds` if missing; an
    existing unit and its beds are left as they are. Its patients are admitted by AUTO_ADMIT on
    their first reading."""
    with transaction.atomic():
        unit, _ = Unit.objects.get_or_create(code=code, defaults={"name": name})
        for position in range(1, beds + 1):
            Bed.objects.get_or_create(
                unit=unit, position=position, defaults={"label": str(position)}
            )
    return unit
