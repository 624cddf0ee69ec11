"""Reads of patients."""

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache

import msgspec
import psycopg
from django.core.exceptions import EmptyResultSet
from django.db import connection
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
from vitals.models import OPEN_ALARM_STATES, Alarm, PatientMetric
from vitals.selectors import READING_VALUE_FIELDS, alarms_off_annotation, reading_values

# ?ordering= values of the patient list. Acuity (NEWS2 of the latest reading) puts patients
# without a score last either way, and breaks ties by name, then uuid: every ordering ends with
# a unique key, so that ties come in one order on every read and every page (the snapshot's
# query and the live one, two pages by OFFSET).
PATIENT_ORDERINGS = {
    "name": [F("name").asc(), F("uuid").asc()],
    "-name": [F("name").desc(), F("uuid").asc()],
    "news2": [
        F("latest_metric__news2_score").asc(nulls_last=True),
        F("name").asc(),
        F("uuid").asc(),
    ],
    "-news2": [
        F("latest_metric__news2_score").desc(nulls_last=True),
        F("name").asc(),
        F("uuid").asc(),
    ],
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
    _ordering_check(ordering)
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


def _ordering_check(ordering: str) -> None:
    if ordering not in PATIENT_ORDERINGS:
        raise InvalidParameter(
            f"'{ordering}' is not an ordering; use one of {', '.join(PATIENT_ORDERINGS)}."
        )


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


# The columns of a ReadingPage's rows, in order: reading_values' fields.
READING_PAGE_FIELDS = ("patient_id", *READING_VALUE_FIELDS)
_JSON_NAMES = tuple(
    name
    for name in READING_PAGE_FIELDS
    if isinstance(PatientMetric._meta.get_field(name), JSONField)
)


@dataclass(frozen=True)
class ReadingPage:
    """A patient's readings as `reading_values` reads them (newest first, since <= measured_at
    <= until), in the three moves DRF's CursorPagination makes on a queryset: `order_by` (the
    page's direction), `filter` (`measured_at__lt` / `__gt` a cursor's position) and one slice,
    which runs the query. The same rows as the queryset (`queryset()`), read faster on
    PostgreSQL (tested): the SQL compiled once for each shape of query (Django compiling it
    took 0.6 ms a request) with only the values bound anew; the times loaded by psycopg's own
    loader in C (Django's, in Python, took 1 ms for a page's 300 times); the JSON columns
    decoded by msgspec, each text once a page (rows share the value: read, never changed). On
    SQLite: the queryset itself."""

    patient_uuid: uuid.UUID
    since: datetime | None = None
    until: datetime | None = None
    ordering: tuple[str, ...] = ("-measured_at",)
    position: tuple[str, str] | None = None  # (lookup, value): ("lt", "2026-11-23 ...")

    def order_by(self, *fields: str) -> "ReadingPage":
        if fields not in (("-measured_at",), ("measured_at",)):
            raise ValueError(f"a ReadingPage is ordered by measured_at only, not {fields}")
        return replace(self, ordering=fields)

    def filter(self, **kwargs: str) -> "ReadingPage":
        ((key, value),) = kwargs.items()
        field, lookup = key.split("__")
        if field != "measured_at" or lookup not in ("lt", "gt") or self.position is not None:
            raise ValueError(f"a ReadingPage filters on one position only, not {kwargs}")
        return replace(self, position=(lookup, value))

    def queryset(self) -> QuerySet:
        """The Django queryset of these rows (what they are tested equal to)."""
        readings = reading_values(patient_uuid=self.patient_uuid, since=self.since,
                                  until=self.until).order_by(*self.ordering)  # fmt: skip
        if self.position is not None:
            lookup, value = self.position
            readings = readings.filter(**{f"measured_at__{lookup}": value})
        return readings

    def __getitem__(self, page: slice) -> list[dict]:
        if connection.vendor != "postgresql":
            return list(self.queryset()[page])
        sql = _reading_page_sql(self._shape(page))
        if sql is None:
            return []
        with connection.cursor() as cursor:
            cursor.cursor.adapters.register_loader("timestamptz", _TIMESTAMPTZ_LOADER)
            cursor.execute(sql, self.params())
            rows = cursor.fetchall()
        names, decode = READING_PAGE_FIELDS, msgspec.json.decode
        decoded: dict[str, object] = {"[]": []}  # a text's value, decoded once a page
        out = []
        for values in rows:
            row = dict(zip(names, values, strict=True))
            for name in _JSON_NAMES:
                text = row[name]
                if text is not None:
                    value = decoded.get(text)
                    if value is None:
                        value = decoded[text] = decode(text)
                    row[name] = value
            out.append(row)
        return out

    def params(self) -> list:
        """The values bound to the SQL, in its order, as Django prepares them."""
        values = [_UUID_FIELD.get_db_prep_value(self.patient_uuid, connection)]
        for value in (self.since, self.until, self.position and self.position[1]):
            if value is not None:
                values.append(_MEASURED_AT.get_db_prep_value(value, connection))
        return values

    def _shape(self, page: slice) -> "_ReadingPageShape":
        """This query with the values replaced by placeholders of the same kind: the key of
        its SQL, and the queryset compiled for it."""
        placeholder = datetime(2000, 1, 1, tzinfo=UTC)
        return _ReadingPageShape(
            page=(page.start, page.stop),
            query=replace(
                self,
                patient_uuid=uuid.UUID(int=0),
                since=self.since and placeholder,
                until=self.until and placeholder,
                position=self.position and (self.position[0], str(placeholder)),
            ),
        )


@dataclass(frozen=True)
class _ReadingPageShape:
    page: tuple[int | None, int | None]
    query: ReadingPage


# The SQL kept of each shape: the most recent 256 (a shape includes its slice, which a client
# chooses: page sizes and cursor offsets must not grow the cache without bound).
@lru_cache(maxsize=256)
def _reading_page_sql(shape: _ReadingPageShape) -> str | None:
    """The SQL Django compiles for a ReadingPage of this shape (its values aside)."""
    return _sql_of(shape.query.queryset()[slice(*shape.page)], shape.query.params())


def _sql_of(queryset: QuerySet, params: list) -> str | None:
    """The SQL Django compiles for `queryset`, checked to bind `params` (its values, in their
    order) as Django binds them: a query whose SQL is kept binds them itself. None for a query
    Django knows to be empty without asking (an empty slice)."""
    try:
        sql, bound = queryset.query.sql_with_params()
    except EmptyResultSet:
        return None
    if list(bound) != params:
        raise AssertionError(f"the values are not bound as Django binds them: {sql}")
    return sql


@dataclass(frozen=True)
class TilePage:
    """`patient_tile_rows(...)` as DRF's PageNumberPagination (Django's Paginator) reads a
    queryset: `count()` and one slice. The same count and rows (tested), from SQL compiled
    once for each shape (the ordering, which filters are given, the slice) on PostgreSQL:
    Django compiled the ward's two queries on every poll. On SQLite: the queryset itself."""

    ordering: str = "name"
    unit: str | None = None
    mrn: str | None = None
    mrn_authority: str | None = None
    ordered = True  # for Django's Paginator: an ordered list

    def queryset(self) -> QuerySet:
        return patient_tile_rows(ordering=self.ordering, unit=self.unit, mrn=self.mrn,
                                 mrn_authority=self.mrn_authority)  # fmt: skip

    def count(self) -> int:
        if connection.vendor != "postgresql":
            return self.queryset().count()
        rows = self._fetch(_tile_count_sql(self._shape()))
        return rows[0][0] if rows else 0

    def __getitem__(self, page: slice) -> list[tuple]:
        if connection.vendor != "postgresql":
            return list(self.queryset()[page])
        return self._fetch(_tile_page_sql(self._shape(), (page.start, page.stop)))

    def params(self) -> list:
        """The values bound to the SQL, in its order, as Django prepares them (the filters of
        `_patients`, in its order)."""
        values = []
        for field, value in (("mrn", self.mrn), ("mrn_authority", self.mrn_authority)):
            if value is not None:
                values.append(Patient._meta.get_field(field).get_db_prep_value(value, connection))
        if self.unit is not None:
            values.append(self.unit)
        return values

    def __post_init__(self) -> None:
        _ordering_check(self.ordering)

    def _shape(self) -> "TilePage":
        """This query with its values replaced by placeholders (the key of its SQL)."""
        return TilePage(ordering=self.ordering, unit=self.unit and "?", mrn=self.mrn and "?",
                        mrn_authority=self.mrn_authority and "?")  # fmt: skip

    def _fetch(self, sql: str | None) -> list[tuple]:
        if sql is None:
            return []
        with connection.cursor() as cursor:
            cursor.execute(sql, self.params())
            return cursor.fetchall()


@lru_cache(maxsize=256)
def _tile_count_sql(shape: TilePage) -> str | None:
    """The count of a TilePage of this shape: its rows' query, unordered, counted (what
    `queryset().count()` answers; Django compiles a count only as it runs it)."""
    rows = _sql_of(shape.queryset().order_by(), shape.params())
    return None if rows is None else f"SELECT COUNT(*) FROM ({rows}) rows"  # noqa: S608 (Django's SQL)


@lru_cache(maxsize=256)
def _tile_page_sql(shape: TilePage, page: tuple[int | None, int | None]) -> str | None:
    return _sql_of(shape.queryset()[slice(*page)], shape.params())


_UUID_FIELD = Patient._meta.get_field("uuid")
_MEASURED_AT = PatientMetric._meta.get_field("measured_at")
# psycopg's own loader of timestamptz (C in the binary package): the times in the connection's
# zone (UTC, as Django sets it), what Django's loader gives after its Python one.
_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(
    psycopg.postgres.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)
