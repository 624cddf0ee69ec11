"""Reads of the gateway: beds by their HL7 location, their current admission, devices, and
what an outgoing message needs to know from the database."""

import uuid
from datetime import datetime

from django.db.models import Q

from gateway.identity import EMULATOR_AUTHORITY, IdentifierRefused, Location, patient_uuid_of
from gateway.models import Device
from gateway.pcd04 import AlarmContext
from patients.models import Patient
from units.models import Admission, Bed, Unit


def _unique(found: dict, name: str):
    """The one named exactly `name`, else the only one (found case-insensitively), else None."""
    return found.get(name) or (next(iter(found.values())) if len(found) == 1 else None)


def unit_get_by_point_of_care(*, code: str) -> Unit | None:
    """The unit an HL7 point of care (PL.1) names: its code, exactly, or else ignoring case if
    that names only one (hospital systems often send codes in capitals)."""
    return _unique({u.code: u for u in Unit.objects.filter(code__iexact=code)}, code)


def bed_get_by_location(*, location: Location) -> Bed | None:
    """The bed an HL7 location names (point of care = the unit's code, bed = its label), each
    matched as unit_get_by_point_of_care says."""
    unit = unit_get_by_point_of_care(code=location.unit)
    if unit is None:
        return None
    beds = Bed.objects.select_related("unit").filter(unit=unit, label__iexact=location.bed)
    return _unique({b.label: b for b in beds}, location.bed)


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


def patient_get_by_identifier(
    *, identifier: str, authority: str
) -> tuple[uuid.UUID, Patient | None]:
    """Whom PID-3 names, for the ORU and the ADT alike: the patient with this MRN (whatever
    their uuid), else the uuid the identifier gives (identity.patient_uuid_of) and the patient
    who has it, if any. IdentifierRefused (204) when an ICU-EMULATOR identifier (a uuid,
    which the API and every PCD-04 message show) names a patient known by a hospital MRN:
    the emulator's authority reaches only patients the hospital does not identify."""
    if patient := patient_get_by_mrn(mrn=identifier, authority=authority):
        return patient.uuid, patient
    patient_uuid = patient_uuid_of(authority=authority, identifier=identifier)
    patient = Patient.objects.filter(uuid=patient_uuid).first()
    if (
        authority == EMULATOR_AUTHORITY
        and patient is not None
        and patient.mrn
        and patient.mrn_authority != EMULATOR_AUTHORITY  # the same uuid spelt otherwise
    ):
        raise IdentifierRefused(
            "204",
            f"PID-3: an {EMULATOR_AUTHORITY} identifier names a patient known by their "
            "hospital identifier: send that one",
        )
    return patient_uuid, patient


def alarm_context_get(*, patient_uuid: str, at: datetime) -> AlarmContext:
    """The MRN of a patient and the bed they were in at `at` (the admission covering that
    moment: a transfer after an alarm does not move it), for a PCD-04 message. An unknown
    patient (deleted since) gets an empty context: the message still names their uuid."""
    patient = Patient.objects.filter(uuid=patient_uuid).only("mrn", "mrn_authority").first()
    if patient is None:
        return AlarmContext()
    admission = (
        Admission.objects.select_related("bed__unit")
        .filter(patient=patient, admitted_at__lte=at)
        .filter(Q(discharged_at__isnull=True) | Q(discharged_at__gt=at))
        .order_by("-admitted_at")
        .first()
    )
    location = (
        Location(unit=admission.bed.unit.code, bed=admission.bed.label) if admission else None
    )
    return AlarmContext(mrn=patient.mrn, mrn_authority=patient.mrn_authority, location=location)
