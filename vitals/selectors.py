"""Reads of vital-sign readings."""

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from uuid import UUID

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    F,
    Func,
    IntegerField,
    JSONField,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import JSONObject
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.sql import values_in
from patients.models import Patient
from vitals.alarms import Limits
from vitals.errors import AlarmNotFound
from vitals.models import (
    Alarm,
    AlarmEvent,
    AlarmLimits,
    AlarmOff,
    AuditEvent,
    ConsumerStall,
    PatientMetric,
)
from vitals.signs import SIGNS


def reading_list(
    *,
    patient: Patient | None = None,
    patient_uuid: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[PatientMetric]:
    """A patient's readings, newest first, with since <= measured_at <= until. The patient, or
    only their uuid (`patient_uuid`): then the patient is found in the readings' own query (a
    subquery by the uuid's index: one round trip fewer than reading the patient first).

    Served by the (patient, measured_at) unique index.
    """
    if patient_uuid is not None:
        by_uuid = Patient.objects.filter(uuid=patient_uuid).values("pk")[:1]
        metrics = PatientMetric.objects.filter(patient_id=Subquery(by_uuid))
    else:
        metrics = PatientMetric.objects.filter(patient=patient)
    if since is not None:
        metrics = metrics.filter(measured_at__gte=since)
    if until is not None:
        metrics = metrics.filter(measured_at__lte=until)
    return metrics.order_by("-measured_at")


# What a reading's API representation reads (vitals.serializers.reading_data): every column but
# the ids.
READING_VALUE_FIELDS = tuple(
    f.name for f in PatientMetric._meta.concrete_fields if f.name not in ("id", "patient")
)


def reading_values(
    *,
    patient: Patient | None = None,
    patient_uuid: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet:
    """`reading_list` as plain rows (dicts of READING_VALUE_FIELDS, and `patient_id`), no
    model instances: the API's fast path for a patient's readings (a page is hundreds of
    them)."""
    readings = reading_list(patient=patient, patient_uuid=patient_uuid, since=since, until=until)
    return readings.values("patient_id", *READING_VALUE_FIELDS)


# The columns a trend summarises, by the name the trend gives them: every charted sign, and
# the NEWS2 score.
TREND_SIGNS = {**{s.key: s.key for s in SIGNS if s.charted}, "news2": "news2_score"}
# Widths (s) a trend's buckets may have: round ones, aligned on the Unix epoch, so that a bucket
# is a whole minute or hour and stays the same bucket while time goes on and a chart refreshes.
TREND_BUCKET_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)
TREND_MAX_POINTS = 1000


class _EpochSeconds(Func):
    """Whole seconds since the Unix epoch of a datetime column (for bucketing by time).
    SQLite stores datetimes as UTC text; strftime reads them without Django's help."""

    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        # '%' is doubled twice: once for the template, once for the cursor's parameter style.
        template = "CAST(strftime('%%%%s', %(expressions)s) AS INTEGER)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = "CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)"
        return self.as_sql(compiler, connection, template=template, **extra)


@dataclass(frozen=True)
class ReadingTrend:
    """A patient's readings between two times summarised into buckets of `bucket_seconds`:
    per bucket its start, the number of readings and each sign's min, max and mean."""

    since: datetime
    until: datetime
    bucket_seconds: int
    buckets: list[dict]


def trend_bucket_seconds(*, since: datetime, until: datetime, points: int) -> int:
    """The narrowest round bucket width that cuts [since, until] into at most `points`
    epoch-aligned buckets. Whole seconds: a span of s seconds touches at most
    ceil((s + 1) / width) + 1 buckets, hence the width >= (s + 1) / (points - 1)."""
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    span = (until - since).total_seconds()
    needed = (span + 1) / (points - 1)
    for width in TREND_BUCKET_SECONDS:
        if width >= needed:
            return width
    return math.ceil(needed / 3600) * 3600  # beyond the list: whole hours


# The readings whose values are the patient's: vitals.news2.artefact_voids as a filter (held
# equal to it by vitals/tests/test_trend.py::test_the_trend_filter_is_artefact_voids).
NOT_VOIDED = Q(artefact="") | Q(artefact="spo2_probe_off", spo2__isnull=True)


def reading_trend(
    *, patient: Patient, since: datetime, until: datetime, points: int = 300
) -> ReadingTrend:
    """A patient's readings with since <= measured_at <= until, summarised into at most
    `points` buckets (in one grouped query, served by the (patient, measured_at) index), oldest
    first; buckets without a reading are left out, and a sign without a value in a bucket is
    None there (a gap in its chart). Readings whose values are not the patient's (flagged as
    artefacts, vitals.news2.artefact_voids) are left out too; a version 2 probe-off reading,
    which carries no SpO2, keeps its other signs."""
    width = trend_bucket_seconds(since=since, until=until, points=points)
    aggregates = {}
    for name, column in TREND_SIGNS.items():
        aggregates |= {
            f"{name}__min": Min(column),
            f"{name}__max": Max(column),
            f"{name}__mean": Avg(column),
        }
    rows = (
        PatientMetric.objects.filter(
            NOT_VOIDED,
            patient=patient,
            measured_at__gte=since,
            measured_at__lte=until,
        )
        .annotate(bucket=_EpochSeconds(F("measured_at")) / width)
        .values("bucket")
        .annotate(count=Count("id"), **aggregates)
        .order_by("bucket")
    )
    buckets = []
    for row in rows:
        bucket = {
            "start": datetime.fromtimestamp(row["bucket"] * width, tz=UTC),
            "count": row["count"],
        }
        for name in TREND_SIGNS:
            low, high, mean = (row[f"{name}__{part}"] for part in ("min", "max", "mean"))
            bucket[name] = (
                None if mean is None else {"min": low, "max": high, "mean": round(mean, 2)}
            )
        buckets.append(bucket)
    return ReadingTrend(since=since, until=until, bucket_seconds=width, buckets=buckets)


def alarm_limits_for(*, patient_ids: Iterable[int]) -> dict[int, Limits]:
    """Each patient's alarm limits, with the kinds switched off; the bedside defaults for a
    patient without a row (two queries, the ids one parameter: `values_in`)."""
    patient_ids = list(patient_ids)
    names = [f.name for f in fields(Limits) if f.name != "off"]
    off: dict[int, set[str]] = defaultdict(set)
    ids = values_in(patient_ids)
    for patient_id, kind in AlarmOff.objects.filter(patient_id__in=ids).values_list(
        "patient_id", "kind"
    ):
        off[patient_id].add(kind)
    rows = AlarmLimits.objects.filter(patient_id__in=ids).values("patient_id", *names)
    found = {row.pop("patient_id"): row for row in rows}
    return {
        pid: Limits(**found.get(pid, {}), off=frozenset(off.get(pid, ()))) for pid in patient_ids
    }


# Patients per statement of patient_metrics_newest: SQLite allows 500 terms in a compound
# SELECT (SQLITE_MAX_COMPOUND_SELECT).
_NEWEST_PER_STATEMENT = 400


def patient_metrics_newest(*, counts: dict[int, int]) -> dict[int, list[PatientMetric]]:
    """Each patient's newest readings by arrival (the highest ids), newest first: `counts`
    says how many of whom. One statement per 400 patients, not one a patient: a UNION ALL
    of each patient's own `ORDER BY id DESC LIMIT n` (each branch the query a single patient's
    would be, so each uses the indexes as that one does). Only the model's table and column
    names go into the SQL text; patient ids and counts are parameters.

    On PostgreSQL one LATERAL join over the ids and counts (two array parameters) instead:
    it planned each UNION ALL branch one by one, 0.67 s (670 us a patient) for the alarm
    engine's first batch of a ward of 1,000 (issue 20), again after every rebalance."""
    found: dict[int, list[PatientMetric]] = {pid: [] for pid in counts}
    if not counts:
        return found
    meta = PatientMetric._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in meta.concrete_fields)
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT newest.* FROM unnest(%s::bigint[], %s::bigint[]) AS wanted(pid, n) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT {columns} FROM {quote(meta.db_table)} "
            f"WHERE {quote('patient_id')} = wanted.pid ORDER BY {quote('id')} DESC "
            f"LIMIT wanted.n) AS newest"
        )
        for metric in PatientMetric.objects.raw(sql, [list(counts), list(counts.values())]):
            found[metric.patient_id].append(metric)
        for metrics in found.values():
            metrics.sort(key=lambda m: m.pk, reverse=True)
        return found
    branch = (
        f"SELECT * FROM (SELECT {columns} FROM {quote(meta.db_table)} "  # noqa: S608
        f"WHERE {quote('patient_id')} = %s ORDER BY {quote('id')} DESC LIMIT %s) AS newest_"
    )
    items = list(counts.items())
    for i in range(0, len(items), _NEWEST_PER_STATEMENT):
        chunk = items[i : i + _NEWEST_PER_STATEMENT]
        # Each branch's subquery named apart (newest_0, newest_1...: numbers, not input).
        sql = " UNION ALL ".join(f"{branch}{n}" for n in range(len(chunk)))
        params = [v for pid, count in chunk for v in (pid, count)]
        for metric in PatientMetric.objects.raw(sql, params):
            found[metric.patient_id].append(metric)
    for metrics in found.values():
        metrics.sort(key=lambda m: m.pk, reverse=True)
    return found


class _JsonArray(Aggregate):
    """The rows' values as one JSON array (SQLite JSON_GROUP_ARRAY, PostgreSQL JSONB_AGG)."""

    function = "JSON_GROUP_ARRAY"
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="JSONB_AGG", **extra)


def alarms_off_annotation() -> Subquery:
    """A patient's alarms switched off as one JSON array of {kind, reason, by_username, at}, or
    null:
    a subquery of the patient's own SELECT, so that a list of patients shows them without a
    query more (`at` as the database writes a time in JSON: read it with alarm_off_items)."""
    items = (
        AlarmOff.objects.filter(patient=OuterRef("pk"))
        .values("patient")
        .annotate(
            items=_JsonArray(
                JSONObject(kind="kind", reason="reason", by_username="by_username", at="at")
            )
        )
        .values("items")
    )
    return Subquery(items, output_field=JSONField())


def alarm_off_items(items: list[dict] | None) -> list[dict]:
    """alarms_off_annotation's array, by kind, each `at` an aware datetime."""
    result = []
    for item in sorted(items or (), key=lambda i: i["kind"]):
        at = parse_datetime(item["at"])
        if timezone.is_naive(at):  # SQLite keeps UTC without an offset
            at = timezone.make_aware(at, UTC)
        result.append({**item, "at": at})
    return result


def alarm_limits_get(*, patient: Patient) -> AlarmLimits:
    """A patient's limits row, or an unsaved one holding the defaults."""
    try:
        return patient.alarm_limits
    except AlarmLimits.DoesNotExist:
        return AlarmLimits(patient=patient)


def alarm_list(
    *,
    patient: Patient | None = None,
    kinds: Sequence[str] = (),
    states: Sequence[str] = (),
    priorities: Sequence[str] = (),
    unit: str | None = None,
) -> QuerySet[Alarm]:
    """Alarms, newest first, optionally of one patient, of some kinds, in some states and of
    some priorities, of the patients now in a bed of a unit (`unit`, its code)."""
    alarms = Alarm.objects.select_related("patient", "acknowledged_by").prefetch_related(
        Prefetch("events", queryset=AlarmEvent.objects.order_by("id"))
    )
    if patient is not None:
        alarms = alarms.filter(patient=patient)
    if kinds:
        alarms = alarms.filter(kind__in=kinds)
    if states:
        alarms = alarms.filter(state__in=states)
    if priorities:
        alarms = alarms.filter(priority__in=priorities)
    if unit is not None:
        # ORM lookups of units' relation: vitals imports nothing of units.
        alarms = alarms.filter(
            patient__admissions__bed__unit__code=unit,
            patient__admissions__discharged_at__isnull=True,
        )
    return alarms.order_by("-raised_at", "-id")


def alarm_get(*, alarm_id: int | str) -> Alarm:
    try:
        return alarm_list().get(pk=int(alarm_id))
    except (Alarm.DoesNotExist, ValueError):
        raise AlarmNotFound(f"No alarm with id {alarm_id}.") from None


def alarm_events_unpublished(*, limit: int = 500) -> list[AlarmEvent]:
    """The oldest events not yet on the alarms topic (served by a partial index)."""
    return list(AlarmEvent.objects.filter(published_at__isnull=True).order_by("id")[:limit])


def audit_event_list(
    *, patient_uuid: UUID | None = None, actions: Sequence[str] = ()
) -> QuerySet[AuditEvent]:
    """The audit trail, newest first, optionally of one patient (by uuid: the trail of a
    patient deleted since is still found) and of some actions."""
    events = AuditEvent.objects.all()
    if patient_uuid is not None:
        events = events.filter(patient_uuid=patient_uuid)
    if actions:
        events = events.filter(action__in=actions)
    return events.order_by("-at", "-id")


def consumer_stall_list() -> list[ConsumerStall]:
    """The partitions a consumer is held at (a message the DLQ does not take), oldest first."""
    return list(ConsumerStall.objects.order_by("since", "topic", "partition"))
