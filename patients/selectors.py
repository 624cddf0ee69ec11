"""Reads of patients."""

import uuid

from django.db.models import QuerySet

from icu.exceptions import InvalidParameter, PatientNotFound
from patients.models import Patient


def uuid_parse(value: str | uuid.UUID, *, name: str = "uuid") -> uuid.UUID:
    """A uuid from a URL or query parameter, or InvalidParameter (400) saying which."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidParameter(f"'{value}' is not a valid {name}.") from None


def patient_list() -> QuerySet[Patient]:
    """Every patient with their latest reading, in one query (no N+1)."""
    return Patient.objects.select_related("latest_metric").order_by("name", "uuid")


def patient_get(*, patient_uuid: str | uuid.UUID) -> Patient:
    """One patient with their latest reading; 400 for a malformed uuid, 404 for an unknown one."""
    parsed = uuid_parse(patient_uuid, name="patient uuid")
    try:
        return patient_list().get(uuid=parsed)
    except Patient.DoesNotExist:
        raise PatientNotFound(f"No patient with uuid {parsed}.") from None
