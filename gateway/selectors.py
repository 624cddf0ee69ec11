"""Reads of the gateway: beds by their HL7 location, their current admission, devices."""

from gateway.identity import Location
from gateway.models import Device
from patients.models import Patient
from units.models import Admission, Bed


def bed_get_by_location(*, location: Location) -> Bed | None:
    """The bed an HL7 location names (point of care = the unit's code, bed = its label)."""
    return (
        Bed.objects.select_related("unit")
        .filter(unit__code=location.unit, label=location.bed)
        .first()
    )


def admission_open_get_by_bed(*, bed_id: int) -> Admission | None:
    """The admission open in this bed, if any (at most one: a constraint)."""
    return (
        Admission.objects.select_related("patient", "bed__unit")
        .filter(bed_id=bed_id, discharged_at__isnull=True)
        .first()
    )


def device_get(*, eui64: str) -> Device | None:
    """The device with this EUI-64, unless it serves several beds (then it names none)."""
    return Device.objects.filter(eui64=eui64, several_beds=False).first()


def patient_get_by_mrn(*, mrn: str, authority: str) -> Patient | None:
    """The patient who already has this hospital identifier (set by the ADT, the API or the
    admin), whatever their uuid: one patient per MRN."""
    return Patient.objects.filter(mrn=mrn, mrn_authority=authority).first() if mrn else None
