"""Reads of the gateway: what an outgoing message needs to know from the database."""

from datetime import datetime

from django.db.models import Q

from gateway.identity import Location
from gateway.pcd04 import AlarmContext
from patients.models import Patient
from units.models import Admission


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
