"""Reads of patients."""

import json
import uuid
from datetime import UTC, datetime

from django.db.models import (
    Aggregate,
    Case,
    F,
    IntegerField,
    JSONField,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import JSONObject

from core.exceptions import InvalidParameter
from patients.errors import PatientNotFound
from patients.models import Patient, PatientNameConflict
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
    """Each patient's open alarms as `patient.open_alarms`, most urgent first, then the newest
    (raised at the same time: the last stored first, so that every read gives one order, the
    ward's snapshot and the list's own) (one query)."""
    rank = Case(
        When(priority="high", then=Value(0)),
        When(priority="medium", then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    alarms = Alarm.objects.filter(state__in=OPEN_ALARM_STATES).order_by(rank, "-raised_at", "-id")
    return Prefetch("alarms", queryset=alarms, to_attr="open_alarms")


class _JSONArrayAgg(Aggregate):
    """The grouped values as one JSON array (SQLite's json_group_array, PostgreSQL's
    jsonb_agg)."""

    function = "JSON_GROUP_ARRAY"
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, function="JSONB_AGG", **extra)


class _NameConflictsField(JSONField):
    """The open name conflicts of a patient as read by `open_name_conflicts_annotation`: a
    list of {name, first_seen_at, last_seen_at, count}, oldest first, times as datetimes."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return []
        items = json.loads(value) if isinstance(value, str) else value
        for item in items:
            for key in ("first_seen_at", "last_seen_at"):
                # SQLite: "2026-11-23 09:30:00" in UTC; PostgreSQL: ISO 8601 with the offset.
                at = datetime.fromisoformat(item[key])
                item[key] = at if at.tzinfo else at.replace(tzinfo=UTC)
        return sorted(items, key=lambda item: (item["first_seen_at"], item["name"]))


def open_name_conflicts_annotation() -> Subquery:
    """Each patient's open name conflicts (other names monitors sent), as one column of the
    patients' own query: a correlated subquery, no query of its own, so the ward list keeps
    its query count."""
    conflicts = (
        PatientNameConflict.objects.filter(patient=OuterRef("pk"), resolved_at__isnull=True)
        .order_by()
        .values("patient")
        .annotate(
            items=_JSONArrayAgg(
                JSONObject(
                    name="name",
                    first_seen_at="first_seen_at",
                    last_seen_at="last_seen_at",
                    count="count",
                )
            )
        )
        .values("items")
    )
    return Subquery(conflicts, output_field=_NameConflictsField())


def patient_list(
    *,
    ordering: str = "name",
    unit: str | None = None,
    mrn: str | None = None,
    mrn_authority: str | None = None,
) -> QuerySet[Patient]:
    """Every patient with their latest reading, open alarms, alarms switched off
    (`alarms_off_items`) and the other names monitors sent (open name conflicts), in two
    queries whatever the number of patients (no N+1). `unit`: only the patients in a bed of
    the unit with this code (an open admission; units/). `mrn`, `mrn_authority`: only the
    patients with this hospital identifier, this assigning authority (each exact, if given)."""
    patients = _patients(ordering=ordering, unit=unit, mrn=mrn, mrn_authority=mrn_authority)
    return (
        patients.select_related("latest_metric", "monitoring_ended_by")
        .annotate(open_name_conflicts=open_name_conflicts_annotation())
        .prefetch_related(open_alarms_prefetch())
        .annotate(alarms_off_items=alarms_off_annotation())
        .order_by(*PATIENT_ORDERINGS[ordering])
    )


def _patients(
    *, ordering: str, unit: str | None, mrn: str | None, mrn_authority: str | None
) -> QuerySet[Patient]:
    """The patients of patient_list's filters (no ordering yet)."""
    if ordering not in PATIENT_ORDERINGS:
        raise InvalidParameter(
            f"'{ordering}' is not an ordering; use one of {', '.join(PATIENT_ORDERINGS)}."
        )
    patients = Patient.objects.all()
    if mrn is not None:
        patients = patients.filter(mrn=mrn)
    if mrn_authority is not None:
        patients = patients.filter(mrn_authority=mrn_authority)
    if unit is not None:
        # ORM lookups of units' relation: vitals imports nothing of units.
        patients = patients.filter(
            admissions__bed__unit__code=unit, admissions__discharged_at__isnull=True
        )
    return patients


# A row of patient_tile_rows.
TILE_ROW_FIELDS = (
    "pk",
    "uuid",
    "tile__key",
    "tile__head",
    "tile__middle",
    "tile__tail",
    "monitoring_ended_by__username",
)


def patient_tile_rows(
    *,
    ordering: str = "name",
    unit: str | None = None,
    mrn: str | None = None,
    mrn_authority: str | None = None,
) -> QuerySet:
    """patient_list's patients, filtered and ordered as it does, as rows of TILE_ROW_FIELDS:
    each patient's entry kept encoded (patients.models.PatientTile: null for a patient without
    one) and the username of whoever ended their monitoring. One query."""
    patients = _patients(ordering=ordering, unit=unit, mrn=mrn, mrn_authority=mrn_authority)
    return patients.order_by(*PATIENT_ORDERINGS[ordering]).values_list(*TILE_ROW_FIELDS)


def patient_get(*, patient_uuid: str | uuid.UUID, plain: bool = False) -> Patient:
    """One patient with their latest reading; 400 for a malformed uuid, 404 for an unknown one.
    `plain`: the patient's own row only (no latest reading, alarms or name conflicts), for the
    endpoints that read below a patient (its readings, its trend): one small query."""
    parsed = uuid_parse(patient_uuid, name="patient uuid")
    try:
        return (Patient.objects if plain else patient_list()).get(uuid=parsed)
    except Patient.DoesNotExist:
        raise PatientNotFound(f"No patient with uuid {parsed}.") from None
