"""Reads of units, beds and admissions: a unit as its central station shows it."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from patients.models import Patient
from units.errors import BedNotFound, UnitNotFound
from units.models import Admission, Bed, Unit
from vitals.patient_selectors import patient_list

# "Unassigned monitors": patients in no bed whose monitoring has not ended and whose newest
# reading was received this recently (a monitor sending now, or just gone quiet: its `no_data`
# alarm shows there for a while); at most this many, the newest first.
UNASSIGNED_WITHIN = timedelta(hours=1)
UNASSIGNED_MAX = 64


def open_admission_exists() -> Exists:
    """For a Patient queryset: whether the patient has an open admission (is in a bed)."""
    return Exists(Admission.objects.filter(patient=OuterRef("pk"), discharged_at__isnull=True))


def unit_list() -> QuerySet[Unit]:
    """Every unit with its number of beds (`bed_count`) and of occupied beds (`occupied`)."""
    return Unit.objects.annotate(
        bed_count=Count("beds", distinct=True),
        occupied=Count(
            "beds__admissions",
            filter=Q(beds__admissions__discharged_at__isnull=True),
            distinct=True,
        ),
    ).order_by("code")


def unit_get(*, code: str) -> Unit:
    try:
        return Unit.objects.get(code=code)
    except Unit.DoesNotExist:
        raise UnitNotFound(f"No unit with code {code!r}.") from None


def bed_get(*, bed_id: object) -> Bed:
    """A bed by id; 404 for an unknown (or malformed) one."""
    try:
        return Bed.objects.select_related("unit").get(pk=int(bed_id))
    except (Bed.DoesNotExist, TypeError, ValueError):
        raise BedNotFound(f"No bed with id {bed_id!r}.") from None


@dataclass
class UnitBed:
    bed: Bed
    admission: Admission | None
    patient: Patient | None


@dataclass
class UnitBoard:
    """A unit as its central station shows it: every bed in screen order, each with its
    occupant (the patient list's item) or none, and the monitors in no bed."""

    unit: Unit
    beds: list[UnitBed]
    unassigned: list[Patient]


def unit_board_get(*, code: str, now: datetime | None = None) -> UnitBoard:
    """The unit, its beds and their patients, and the unassigned monitors, in a number of
    queries that does not depend on the number of beds (7 when beds are occupied)."""
    unit = unit_get(code=code)
    beds = list(Bed.objects.filter(unit=unit).order_by("position"))
    admissions = {
        a.bed_id: a
        for a in Admission.objects.filter(bed__unit=unit, discharged_at__isnull=True).order_by()
    }
    patients = (
        patient_list().in_bulk([a.patient_id for a in admissions.values()]) if admissions else {}
    )
    now = now or timezone.now()
    unassigned = list(
        patient_list(ordering="name")
        .filter(
            ~open_admission_exists(),
            monitoring_ended_at__isnull=True,
            latest_metric__received_at__gte=now - UNASSIGNED_WITHIN,
        )
        .order_by("-latest_metric__received_at", "uuid")[:UNASSIGNED_MAX]
    )
    return UnitBoard(
        unit=unit,
        beds=[
            UnitBed(
                bed=bed,
                admission=admissions.get(bed.pk),
                patient=patients.get(admissions[bed.pk].patient_id)
                if bed.pk in admissions
                else None,
            )
            for bed in beds
        ],
        unassigned=unassigned,
    )


def admission_open_get(*, patient: Patient) -> Admission | None:
    return (
        Admission.objects.select_related("bed__unit")
        .filter(patient=patient, discharged_at__isnull=True)
        .first()
    )


def admission_list(*, patient: Patient | None = None) -> QuerySet[Admission]:
    admissions = Admission.objects.select_related(
        "patient", "bed__unit", "admitted_by", "discharged_by"
    )
    if patient is not None:
        admissions = admissions.filter(patient=patient)
    return admissions.order_by("-admitted_at", "-id")
