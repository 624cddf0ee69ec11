"""Reads of patients."""

import uuid

from django.db.models import Case, F, IntegerField, Prefetch, QuerySet, Value, When

from icu.exceptions import InvalidParameter, PatientNotFound
from patients.models import Patient
from vitals.models import OPEN_ALARM_STATES, Alarm
from vitals.selectors import alarms_off_annotation

# ?ordering= values of the patient list. Acuity (NEWS2 of the latest reading) puts patients
# without a score last either way, and breaks ties by name.
PATIENT_ORDERINGS = {
    "name": [F("name").asc(), F("uuid").asc()],
    "-name": [F("name").desc(), F("uuid").asc()],
    "news2": [F("latest_metric__news2_score").asc(nulls_last=True), F("name").asc()],
    "-news2": [F("latest_metric__news2_score").desc(nulls_last=True), F("name").asc()],
}


def uuid_parse(value: str | uuid.UUID, *, name: str = "uuid") -> uuid.UUID:
    """A uuid from a URL or query parameter, or InvalidParameter (400) saying which."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidParameter(f"'{value}' is not a valid {name}.") from None


def open_alarms_prefetch() -> Prefetch:
    """Each patient's open alarms as `patient.open_alarms`, most urgent first (one query)."""
    rank = Case(
        When(priority="high", then=Value(0)),
        When(priority="medium", then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    alarms = Alarm.objects.filter(state__in=OPEN_ALARM_STATES).order_by(rank, "-raised_at")
    return Prefetch("alarms", queryset=alarms, to_attr="open_alarms")


def patient_list(*, ordering: str = "name") -> QuerySet[Patient]:
    """Every patient with their latest reading, open alarms and alarms switched off
    (`alarms_off_items`), in two queries whatever the number of patients (no N+1)."""
    if ordering not in PATIENT_ORDERINGS:
        raise InvalidParameter(
            f"'{ordering}' is not an ordering; use one of {', '.join(PATIENT_ORDERINGS)}."
        )
    return (
        Patient.objects.select_related("latest_metric")
        .prefetch_related(open_alarms_prefetch())
        .annotate(alarms_off_items=alarms_off_annotation())
        .order_by(*PATIENT_ORDERINGS[ordering])
    )


def patient_get(*, patient_uuid: str | uuid.UUID) -> Patient:
    """One patient with their latest reading; 400 for a malformed uuid, 404 for an unknown one."""
    parsed = uuid_parse(patient_uuid, name="patient uuid")
    try:
        return patient_list().get(uuid=parsed)
    except Patient.DoesNotExist:
        raise PatientNotFound(f"No patient with uuid {parsed}.") from None
