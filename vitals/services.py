"""Writes of vital-sign readings."""

import logging
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import msgspec
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.base import ModelState
from django.utils import timezone

from core.sql import values_in
from patients.models import Patient, PatientNameConflict
from patients.services import (
    NameMismatch,
    patient_bulk_get_or_create,
    patient_name_conflicts_record,
    patients_lock,
)
from vitals.alarms import ALARM_OFF_KINDS, NO_DATA, PRIORITY_RANK, Decision
from vitals.contract import Reading
from vitals.errors import AlarmChanged, AlarmNotOpen, AlarmOffRefused
from vitals.models import (
    OPEN_ALARM_STATES,
    Alarm,
    AlarmEvent,
    AlarmLimits,
    AlarmOff,
    AlarmPriority,
    AlarmState,
    AuditEvent,
    ConsumerStall,
    PatientMetric,
)
from vitals.news2 import LATEST_KEYS, news2_track
from vitals.signs import SIGN_KEYS, SIGN_KEYS_OF_FIELD
from vitals.tile_services import patient_tiles_refresh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    stored: int
    # Exact copies of a reading stored before or earlier in the batch: skipped silently.
    duplicates: int
    patients: int
    # The rows this call inserted, in batch order: what alarm detection looks at.
    new: list[PatientMetric] = field(default_factory=list)
    # Readings of a patient and time already taken (stored, or earlier in the batch) but with
    # other values: not stored (the first one wins), in batch order.
    conflicting: list[Reading] = field(default_factory=list)
    # Of those stored, the ones whose name is not their patient's, by (patient, name): logged.
    name_mismatches: list[NameMismatch] = field(default_factory=list)


# What a reading says about the patient at one time: two readings of the same (patient,
# measured_at) that differ in one of these conflict. The name is the patient's, not the reading's.
# Every sign (None: not measured, which differs from any value), then the observations.
_READING_VALUES = (*SIGN_KEYS, "on_oxygen", "consciousness", "artefact")


_reading_values_get = attrgetter(*_READING_VALUES)


def _reading_values(reading: Reading) -> tuple:
    values = _reading_values_get(reading)
    return (*values[:-1], values[-1] or "")  # no artefact is "" in the database


class PatientCache:
    """A consumer's memory of its patients across batches: each patient (id, uuid, name, NEWS2
    scale) and their newest values (`Patient.latest_signs` as `news2_track` keeps them), so
    that a batch neither builds its patients anew nor decodes their `latest_signs` again.

    How it stays correct:
    - what clinicians change (the name, the SpO2 scale: `hypercapnic_respiratory_failure`)
      is read again every batch, in the one SELECT of the batch's patients (four plain
      columns, no model built, no JSON decoded), and set on the cached patient: a change made
      between two batches counts from the next one;
    - `latest_signs` is written only by the consumer that stores the patient's readings, and
      a patient's readings come from one partition, which one consumer holds at a time; so the
      copy in memory is the one in the database, kept only for the patients whose
      `latest_signs` the batch wrote (the others of the batch are dropped: their values were
      not written), with the `latest_metric_id` written beside them. Should two consumers
      store a patient's readings in turn all the same (a moved partition's old owner still
      finishing its batch), the patient's `latest_metric_id` as the batch finds it is not the
      one remembered: its `latest_signs` is read again (`reading_bulk_store`). The consumer
      forgets everything when its partitions are revoked and when a batch's transaction
      fails (`forget`), as the alarm engine does;
    - a patient gone from the database, or another row with the uuid, is looked up anew.
    """

    def __init__(self) -> None:
        self.patients: dict[uuid.UUID, Patient] = {}
        self.latest: dict[uuid.UUID, dict[str, tuple[object, datetime]]] = {}
        # The latest_metric_id the values in `latest` go with.
        self.latest_ids: dict[uuid.UUID, int | None] = {}

    def forget(self) -> None:
        self.patients.clear()
        self.latest.clear()
        self.latest_ids.clear()

    def get_or_create(
        self, *, names_by_uuid: dict[uuid.UUID, str]
    ) -> tuple[dict[uuid.UUID, Patient], dict[uuid.UUID, dict], dict[uuid.UUID, int | None]]:
        """The batch's patients (created when missing), their newest values, and the
        `latest_metric_id` those values go with."""
        patients: dict[uuid.UUID, Patient] = {}
        latest: dict[uuid.UUID, dict] = {}
        signs_of: dict[uuid.UUID, int | None] = {}
        cached = [u for u in names_by_uuid if u in self.patients]
        if cached:
            rows = (
                Patient.objects.filter(uuid__in=values_in(cached))
                .order_by()
                .values_list(
                    "uuid", "id", "name", "hypercapnic_respiratory_failure", "latest_metric_id"
                )
            )
            for patient_uuid, pk, name, hypercapnic, latest_metric_id in rows:
                patient = self.patients[patient_uuid]
                if patient.pk == pk:
                    patient.name, patient.hypercapnic_respiratory_failure = name, hypercapnic
                    patient.latest_metric_id = latest_metric_id
                    patients[patient_uuid] = patient
                    latest[patient_uuid] = self.latest[patient_uuid]
                    signs_of[patient_uuid] = self.latest_ids[patient_uuid]
        missing = {u: n for u, n in names_by_uuid.items() if u not in patients}
        if missing:
            found = patient_bulk_get_or_create(names_by_uuid=missing)
            patients.update(found)
            latest.update((u, _latest_signs_load(p.latest_signs)) for u, p in found.items())
            signs_of.update((u, p.latest_metric_id) for u, p in found.items())
        return patients, latest, signs_of

    def keep(
        self,
        *,
        patients: dict[uuid.UUID, Patient],
        latest: dict[uuid.UUID, dict],
        latest_ids: dict[int, int | None],
        written: set,
    ) -> None:
        """After a batch: remember the patients whose `latest_signs` it wrote (by uuid in
        `written`) with their `latest_metric_id` now (`latest_ids`, by patient id), forget
        the batch's others."""
        for patient_uuid, patient in patients.items():
            if patient_uuid in written:
                self.patients[patient_uuid] = patient
                self.latest[patient_uuid] = latest[patient_uuid]
                self.latest_ids[patient_uuid] = latest_ids[patient.pk]
            else:
                self.patients.pop(patient_uuid, None)
                self.latest.pop(patient_uuid, None)
                self.latest_ids.pop(patient_uuid, None)


def reading_bulk_store(
    *,
    readings: Sequence[Reading],
    received_at: datetime | None = None,
    cache: PatientCache | None = None,
) -> StoreResult:
    """Store a batch of readings in one transaction: exactly once, whatever is re-delivered.

    Duplicates inside the batch are dropped first (the first copy wins). Readings already in
    the database are skipped by the unique (patient, measured_at) index: one INSERT ... ON
    CONFLICT DO NOTHING RETURNING (see `_reading_insert`), which also says exactly which rows
    went in, even when another consumer wrote some of them a moment before.
    A reading skipped either way is a duplicate when its values are those of the reading kept,
    and conflicting otherwise (`_stored_values`: one SELECT, only when a row was skipped).
    Each patient's `latest_metric` becomes the newest reading received, in the same
    transaction, so that the ward list never points at a reading that is not committed.

    A reading's NEWS2 uses each parameter's newest value within its window
    (settings.SIGN_VALIDITY), from it or from earlier readings: each patient's newest values
    (`Patient.latest_signs`) are loaded with the patient, brought up to date reading by reading
    in the order received (`news2_track`), and written with `latest_metric`: no query per
    reading. `cache`: the consumer's memory of its patients across batches (PatientCache);
    the caller forgets it when the transaction fails.
    """
    unique: dict[tuple, Reading] = {}
    conflicting: list[Reading] = []
    for reading in readings:
        first = unique.setdefault((reading.patient_uuid, reading.measured_at), reading)
        if first is not reading and _reading_values(first) != _reading_values(reading):
            conflicting.append(reading)
    if not unique:
        return StoreResult(stored=0, duplicates=len(readings), patients=0)
    received_at = received_at or timezone.now()

    with transaction.atomic():
        # A new patient takes the batch's first name for them (the others are conflicts).
        names = {r.patient_uuid: r.patient_name for r in reversed(unique.values())}
        if cache is None:
            patients = patient_bulk_get_or_create(names_by_uuid=names)
            latest = {u: _latest_signs_load(p.latest_signs) for u, p in patients.items()}
            signs_of = {u: p.latest_metric_id for u, p in patients.items()}
        else:
            patients, latest, signs_of = cache.get_or_create(names_by_uuid=names)
        # Every writer's lock order: the patients first, in id order. Before the readings'
        # INSERT, whose foreign key checks lock each patient's row (KEY SHARE), and the
        # latest_metric UPDATE, both in whatever order their plan visits the rows.
        locked = patients_lock(patient_ids=[patient.pk for patient in patients.values()])
        # Each patient's latest reading as the batch found it: under the lock on PostgreSQL
        # (the newest committed), read with the patients on SQLite, whose writers take turns.
        prior = {p.pk: locked.get(p.pk, p.latest_metric_id) for p in patients.values()}
        _latest_signs_reload(patients=patients, latest=latest, signs_of=signs_of, prior=prior)
        validity = settings.SIGN_VALIDITY
        late = _readings_late(readings=unique.values(), patients=patients, received_at=received_at)
        # Each patient's values before the batch: should a reading not be inserted (delivered
        # again), those after it are scored again without it (`_news2_rescore`).
        before = {u: dict(values) for u, values in latest.items()}
        candidates = [
            _reading(
                r, patients[r.patient_uuid], received_at, latest[r.patient_uuid], validity, late
            )
            for r in unique.values()
        ]
        new = _reading_insert(candidates)
        if len(new) < len(candidates):
            skipped = [
                (reading, metric)
                for reading, metric in zip(unique.values(), candidates, strict=True)
                if metric.pk is None
            ]
            _news2_rescore(
                new=new,
                skipped=[m for _, m in skipped],
                latest=latest,
                before=before,
                validity=validity,
            )
            stored_values = _stored_values([metric for _, metric in skipped])
            conflicting += [
                reading
                for reading, metric in skipped
                if stored_values.get((metric.patient_id, metric.measured_at))
                not in (None, _reading_values(reading))
            ]
            order = {id(r): i for i, r in enumerate(readings)}
            conflicting.sort(key=lambda r: order[id(r)])
        # The names of the readings just stored (a replayed one was counted the first time).
        pairs = zip(unique.values(), candidates, strict=True)
        seen = [(r.patient_uuid, r.patient_name) for r, m in pairs if m.pk is not None]
        mismatches = patient_name_conflicts_record(
            patients=patients, names_seen=seen, seen_at=received_at
        )
        by_id = {p.pk: u for u, p in patients.items()}
        # The alarm engine checks that it judged that reading last (`AlarmEngine._reconcile`).
        for metric in new:
            metric.latest_before = prior[metric.patient_id]
        if new:
            patient_latest_reading_refresh(
                new=new,
                # Once a patient, not once a reading.
                latest_signs={
                    pid: _latest_signs_dump(latest[by_id[pid]])
                    for pid in dict.fromkeys(m.patient_id for m in new)
                },
            )
        if cache is not None:
            written = {by_id[m.patient_id] for m in new}
            now = dict(prior)
            now.update((m.patient_id, m.pk) for m in new if not m.late)
            cache.keep(patients=patients, latest=latest, latest_ids=now, written=written)
    if new:
        patient_ids = list(dict.fromkeys(m.patient_id for m in new))
        for hook in _PATIENTS_STORED_HOOKS:
            hook(patient_ids=patient_ids, received_at=received_at)
    return StoreResult(
        stored=len(new),
        duplicates=len(readings) - len(new) - len(conflicting),
        patients=len(patients),
        new=new,
        conflicting=conflicting,
        name_mismatches=mismatches,
    )


def _latest_signs_reload(
    *,
    patients: dict[uuid.UUID, Patient],
    latest: dict[uuid.UUID, dict],
    signs_of: dict[uuid.UUID, int | None],
    prior: dict[int, int | None],
) -> None:
    """Read again the `latest_signs` of the patients whose values in `latest` go with another
    latest reading (`signs_of`) than the one the batch found (`prior`): another consumer stored
    readings of theirs meanwhile (a moved partition's old owner still finishing its batch; on
    PostgreSQL, also one that committed between the patients' SELECT and their lock). One
    SELECT, only then."""
    stale = [u for u, p in patients.items() if prior[p.pk] != signs_of[u]]
    if not stale:
        return
    rows = Patient.objects.filter(uuid__in=values_in(stale)).values_list("uuid", "latest_signs")
    for patient_uuid, stored in rows:
        latest[patient_uuid] = _latest_signs_load(stored)


def reading_late(
    *,
    measured_at: datetime,
    sent_at: datetime | None,
    received_at: datetime,
    previous: tuple[datetime, datetime | None, datetime] | None,
    tolerance: float,
) -> bool:
    """Whether a reading is *late*: one measured long before it was sent, received while its
    monitor's on-time readings keep coming (a gateway back-filling an outage after the live
    readings resumed), as opposed to a monitor whose clock is wrong or was set back. A late
    reading is stored (charts, exports) but neither judged for alarms, nor made the patient's
    latest, nor counted as heard from (docs/alarms.md, "Monitor clocks").

    `previous`: the (measured_at, sent_at, received_at) of the patient's last reading judged
    (their `latest_metric`), None if none. Late when all hold, `tolerance` the seconds of
    ALARM_CLOCK_SKEW_WARN:
    - its own clock offset (measured_at - sent_at) is beyond the tolerance (a clock set right,
      within it, is judged at once);
    - it was measured more than the tolerance before the last reading judged;
    - the last reading judged was on time (its offset within the tolerance, or unknown);
    - and was received at most the tolerance before it: on-time readings still come. A
      monitor whose clock jumps back while nothing else sends is judged again once that much
      time has passed (its `clock_skew` raised then), not left unjudged for the hour.
    """
    if previous is None or sent_at is None:
        return False
    skew = timedelta(seconds=tolerance)
    previous_measured, previous_sent, previous_received = previous
    return (
        abs(measured_at - sent_at) > skew
        and measured_at < previous_measured - skew
        and (previous_sent is None or abs(previous_measured - previous_sent) <= skew)
        and received_at - previous_received <= skew
    )


def _readings_late(
    *, readings: Iterable[Reading], patients: dict[uuid.UUID, Patient], received_at: datetime
) -> set[int]:
    """The id()s of the late readings of a batch (`reading_late`), each judged against the
    last reading of its patient that was not late, in the order received. Only a reading sent
    more than the tolerance after it was measured can be late: for the patients of such
    readings (none in a batch of monitors on time), their latest reading is read (one
    SELECT); no statement otherwise."""
    tolerance = settings.ALARM_CLOCK_SKEW_WARN
    skew = timedelta(seconds=tolerance)
    behind = [r for r in readings if r.sent_at is not None and r.measured_at < r.sent_at - skew]
    if not behind:
        return set()
    ids = {patients[r.patient_uuid].pk for r in behind}
    previous: dict[int, tuple] = {
        pk: (measured, sent, received)
        for pk, measured, sent, received in Patient.objects.filter(
            pk__in=values_in(sorted(ids)), latest_metric__isnull=False
        ).values_list(
            "pk",
            "latest_metric__measured_at",
            "latest_metric__sent_at",
            "latest_metric__received_at",
        )
    }
    late = set()
    for reading in readings:
        pk = patients[reading.patient_uuid].pk
        if pk not in ids:
            continue
        if reading_late(
            measured_at=reading.measured_at,
            sent_at=reading.sent_at,
            received_at=received_at,
            previous=previous.get(pk),
            tolerance=tolerance,
        ):
            late.add(id(reading))
        else:
            previous[pk] = (reading.measured_at, reading.sent_at, received_at)
    return late


def _stored_values(metrics: list[PatientMetric]) -> dict[tuple, tuple]:
    """The stored values (as `_reading_values` gives them) of the rows with the (patient,
    measured_at) of these metrics, by that pair: one query for the whole batch."""
    patient_ids = {m.patient_id for m in metrics}
    times = {m.measured_at for m in metrics}
    rows = PatientMetric.objects.filter(
        patient_id__in=patient_ids, measured_at__in=times
    ).values_list("patient_id", "measured_at", *_READING_VALUES)
    return {(row[0], row[1]): row[2:] for row in rows}


# The columns the write path inserts, and how to read them off a PatientMetric in one call.
_INSERT_FIELDS = [f for f in PatientMetric._meta.concrete_fields if not f.primary_key]
_INSERT_VALUES = attrgetter(*(f.attname for f in _INSERT_FIELDS))
_DATETIME_COLUMNS = [i for i, f in enumerate(_INSERT_FIELDS) if isinstance(f, models.DateTimeField)]
_JSON_COLUMNS = [i for i, f in enumerate(_INSERT_FIELDS) if isinstance(f, models.JSONField)]
_KEY_COLUMNS = (
    _INSERT_FIELDS.index(PatientMetric._meta.get_field("patient")),
    _INSERT_FIELDS.index(PatientMetric._meta.get_field("measured_at")),
)


def _reading_db_values(metric: PatientMetric, adapt: Callable | None = None) -> list:
    """The row to INSERT for a metric, in `_INSERT_FIELDS` order.

    The hot path of the consumer, so not Field.get_db_prep_save() on every value (a third of
    the consumer's time): `_reading` builds every value from a validated Reading with its
    column's Python type already, which those calls would return unchanged, except for the
    datetimes, which go through the backend's own adaptation (text in UTC on SQLite; `adapt`:
    that adaptation remembered across a batch, `_datetime_adapter`), and JSON, as its text
    (`_json_text`). A test holds this equal to get_db_prep_save() for every column.
    """
    values = list(_INSERT_VALUES(metric))
    adapt = adapt or connection.ops.adapt_datetimefield_value
    for i in _DATETIME_COLUMNS:
        values[i] = adapt(values[i])
    for i in _JSON_COLUMNS:
        values[i] = None if values[i] is None else _json_text(values[i])
    return values


_json_encode = msgspec.json.Encoder().encode


def _json_text(value: object) -> str:
    """A JSON column's value as its text: msgspec, in C (json.dumps was a twentieth of the
    consumer's time). The same document as json.dumps writes, without its spaces; the write
    paths hold plain JSON values only (dict, list, str, int, float, bool, None)."""
    return _json_encode(value).decode()


def _datetime_adapter() -> Callable[[datetime | None], object]:
    """The backend's adaptation of datetimes (adapt_datetimefield_value), each value adapted
    once: a batch's readings share their received_at, and their measured_at and sent_at
    repeat across patients (a ward's monitors send on the same second). Equal datetimes (the
    same instant) adapt to the same value."""
    adapt = connection.ops.adapt_datetimefield_value
    memo: dict = {}

    def adapted(value: datetime | None) -> object:
        try:
            return memo[value]
        except KeyError:
            memo[value] = result = adapt(value)
            return result

    return adapted


def _reading_insert(candidates: list[PatientMetric]) -> list[PatientMetric]:
    """INSERT the candidates, skipping those already stored; return those inserted (with their
    ids), in the candidates' order.

    One statement that says which rows it inserted (ON CONFLICT DO NOTHING RETURNING, SQLite
    3.35+ and PostgreSQL), instead of bulk_create, which cannot tell which rows it skipped and
    costs more in Python than the database takes to write:
    - PostgreSQL: the rows COPYed into a temporary table (`_copy_stage`), then INSERT ...
      SELECT from it: no parameter for psycopg to quote one by one (its client-side binding
      of one array per column was a fifth of the consumer's time);
    - SQLite: INSERT ... VALUES (...), (...), as many rows per statement as its limit on
      parameters allows (32,766 since SQLite 3.32, not the 999 Django assumes).
    Only the model's own table and column names go into the SQL text (quoted); values are
    parameters.
    """
    adapt = _datetime_adapter()
    rows = [_reading_db_values(m, adapt) for m in candidates]
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in _INSERT_FIELDS)
    head = f"INSERT INTO {quote(PatientMetric._meta.db_table)} ({names}) "
    tail = (
        f" ON CONFLICT ({quote('patient_id')}, {quote('measured_at')}) DO NOTHING "
        f"RETURNING {quote('id')}, {quote('patient_id')}, {quote('measured_at')}"
    )
    inserted: dict[tuple, int] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            stage = _copy_stage(cursor, model=PatientMetric, fields=_INSERT_FIELDS, rows=rows)
            cursor.execute(f"{head}SELECT {names} FROM {stage}{tail}")  # noqa: S608
            inserted.update(((p, at), pk) for pk, p, at in cursor.fetchall())
        else:
            # Django's SQLite connection parses a returned datetime column into a naive UTC
            # datetime: adapted again, it is the very text that was sent.
            adapt = connection.ops.adapt_datetimefield_value
            per_statement = _max_query_params() // len(_INSERT_FIELDS)
            group = f"({', '.join(['%s'] * len(_INSERT_FIELDS))})"
            for i in range(0, len(rows), per_statement):
                chunk = rows[i : i + per_statement]
                values = ", ".join([group] * len(chunk))
                params = [v for row in chunk for v in row]
                cursor.execute(f"{head}VALUES {values}{tail}", params)
                inserted.update(((p, adapt(at)), pk) for pk, p, at in cursor.fetchall())
    new = []
    patient_column, time_column = _KEY_COLUMNS
    for metric, row in zip(candidates, rows, strict=True):
        pk = inserted.get((row[patient_column], row[time_column]))
        if pk is not None:
            metric.pk = pk
            metric._state.adding = False
            new.append(metric)
    return new


def _copy_stage(
    cursor, *, model: type[models.Model], fields: Sequence[models.Field], rows: Sequence[Sequence]
) -> str:
    """PostgreSQL: put `rows` (values of `fields` of `model`, ready for the database: JSON as
    its text) into a temporary table of those columns with one COPY; return its quoted name.

    The table is the session's (created the first time, emptied each time: a test's
    transaction never commits, so ON COMMIT would not do). The caller then reads it in one
    INSERT ... SELECT or UPDATE ... FROM. Only the model's own table and column names go into
    the SQL text (quoted); the values go through COPY's data stream, each escaped by psycopg's
    own dumpers (write_row, in C: the text built in Python by a converter a value cost 12 us a
    reading, a tenth of the consumer's Python)."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in fields)
    stage = quote(f"stage_{model._meta.db_table}_{zlib.crc32(names.encode()):08x}")
    # One round trip: psycopg's client-side binding cursor (Django's) takes two statements.
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS "  # noqa: S608 (names only)
        f"SELECT {names} FROM {quote(model._meta.db_table)} WITH NO DATA; TRUNCATE {stage}"
    )
    with cursor.cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)
    return stage


def _objects_insert(*, model: type[models.Model], objs: Sequence[models.Model]) -> list:
    """INSERT new instances of `model` (no conflict expected) and set their ids, in order:
    what `bulk_create` does for them (each field's pre_save, so auto_now_add; ids from
    RETURNING), in fewer statements and less Python.

    `bulk_create` split SQLite inserts at the 999 parameters Django assumes (66 alarms, 199
    events a statement) and prepared every value through its field and the SQL compiler,
    some 190 us an alarm event: a tenth of a batch under alarm churn. Here values are
    prepared as `_reading_db_values` does (datetimes adapted by the backend, JSON as its
    text, floats as float; a test holds them equal to get_db_prep_save()), and go in
    - SQLite: INSERT ... VALUES (...), (...) RETURNING id, as many rows a statement as its
      real limit on parameters allows;
    - PostgreSQL: COPY into a temporary table (`_copy_stage`), then INSERT ... SELECT ...
      ORDER BY its physical order (the order written) RETURNING id.
    Only the model's own table and column names go into the SQL text (quoted)."""
    if not objs:
        return []
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    rows = [_db_values(fields, [f.pre_save(obj, True) for f in fields]) for obj in objs]
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in fields)
    head = f"INSERT INTO {quote(model._meta.db_table)} ({names}) "
    returning = f" RETURNING {quote(model._meta.pk.column)}"
    ids: list[int] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            stage = _copy_stage(cursor, model=model, fields=fields, rows=rows)
            cursor.execute(f"{head}SELECT {names} FROM {stage} ORDER BY ctid{returning}")  # noqa: S608
            ids = [row[0] for row in cursor.fetchall()]
        else:
            per_statement = _max_query_params() // len(fields)
            group = f"({', '.join(['%s'] * len(fields))})"
            for i in range(0, len(rows), per_statement):
                chunk = rows[i : i + per_statement]
                params = [v for row in chunk for v in row]
                cursor.execute(f"{head}VALUES {', '.join([group] * len(chunk))}{returning}", params)
                ids += [row[0] for row in cursor.fetchall()]
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias
    return list(objs)


def _db_values(fields: Sequence[models.Field], values: list) -> list:
    """`values` of `fields` as the database takes them, as Field.get_db_prep_save() would
    give them for what the write paths hold (plain Python values of the column's type):
    datetimes through the backend's adaptation, JSON as its text, floats as float."""
    adapt = connection.ops.adapt_datetimefield_value
    for i, f in enumerate(fields):
        value = values[i]
        if value is None:
            continue
        if isinstance(f, models.DateTimeField):
            values[i] = adapt(value)
        elif isinstance(f, models.JSONField):
            values[i] = _json_text(value)
        elif isinstance(f, models.FloatField):
            values[i] = float(value)
    return values


def _max_query_params() -> int:
    """Parameters one statement may have: SQLite's run-time limit (Django assumes 999, the
    default before SQLite 3.32); Django's figure elsewhere."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params or 65_535


def _reading(
    reading: Reading,
    patient: Patient,
    received_at: datetime,
    latest: dict[str, tuple[object, datetime]],
    validity: dict[str, timedelta],
    late: AbstractSet[int] = frozenset(),
) -> PatientMetric:
    """The PatientMetric of a validated reading, NEWS2 scored; `.late` when its id() is in
    `late` (`_readings_late`).

    Built without Model.__init__ (`_metric_new`): its per-keyword work was a tenth of the
    consumer's time under alarm churn, for values already of their column's type. A test
    holds the instance equal to `PatientMetric(...)`'s for every field."""
    metric = _metric_new(
        patient,
        {
            "id": None,
            "patient_id": patient.pk,
            "measured_at": reading.measured_at,
            **dict(zip(SIGN_KEYS, _signs_get(reading), strict=True)),
            "on_oxygen": reading.on_oxygen,
            "consciousness": reading.consciousness,
            "artefact": reading.artefact or "",
            "news2_score": None,
            "news2_risk": None,
            "spo2_scale": patient.spo2_scale,
            "news2_subscores": None,
            "news2_missing": [],
            "received_at": received_at,
            "sent_at": reading.sent_at,
            # Not a column: a late reading is stored, neither judged nor made latest.
            "late": id(reading) in late,
            # Nor this: the signs the contract refused, for their alarms (vitals/alarms.py).
            "refused": reading.refused,
        },
    )
    _metric_score(metric, latest, validity)
    return metric


def _metric_score(
    metric: PatientMetric, latest: dict[str, tuple[object, datetime]], validity: dict
) -> None:
    """Score a metric's NEWS2 with the patient's newest values `latest` (`news2_track`, which
    keeps the metric's own in `latest`, unless it is late). Scored once: the alarm engine
    reads the same result from `metric.news2`. A sign the contract refused in it is no longer
    the patient's: its older value is dropped, not carried on as if measured (a pressure
    collapsing below the range must not be scored and shown as the 120/80 before it)."""
    if metric.refused and not metric.late:
        for refusal in metric.refused:
            for field in refusal.fields:
                for key in SIGN_KEYS_OF_FIELD[field]:
                    latest.pop(key, None)
    metric.news2 = score = news2_track(
        latest, metric, validity=validity, spo2_scale=metric.spo2_scale, fold=not metric.late
    )
    if score is None:
        metric.news2_score = metric.news2_risk = metric.news2_subscores = None
        metric.news2_missing = []
    else:
        metric.news2_score, metric.news2_risk = score.score, score.risk
        metric.news2_subscores, metric.news2_missing = score.subscores, list(score.missing)


_NEWS2_FIELDS = ("news2_score", "news2_risk", "news2_subscores", "news2_missing")
_news2_get = attrgetter(*_NEWS2_FIELDS)


def _news2_rescore(
    *,
    new: list[PatientMetric],
    skipped: list[PatientMetric],
    latest: dict[uuid.UUID, dict],
    before: dict[uuid.UUID, dict],
    validity: dict,
) -> None:
    """Score the inserted readings again, for the patients of which a reading of the batch was
    not inserted (delivered again), with the values received before each: the readings
    delivered again were scored, and their values kept, as if received now, so those received
    after them in the batch were scored with them. Each such patient's values are those of
    before the batch (`before`, by uuid), then each inserted reading's in the order received;
    a score that changed is written again (one UPDATE, only then: when a reading delivered
    again is followed in its batch by a new one of its patient that it scored otherwise)."""
    redo = {m.patient_id for m in skipped} & {m.patient_id for m in new}
    if not redo:
        return
    values = {m.patient_id: dict(before[m.patient.uuid]) for m in new if m.patient_id in redo}
    changed = []
    for metric in new:
        if metric.patient_id in redo:
            before = _news2_get(metric)
            _metric_score(metric, values[metric.patient_id], validity)
            if _news2_get(metric) != before:
                changed.append((metric.pk, *_news2_get(metric)))
    for metric in new:
        if metric.patient_id in redo:
            # The values kept are those of the inserted readings only (the dict the batch
            # writes to latest_signs, and the cache keeps, is the patient's own).
            kept = latest[metric.patient.uuid]
            kept.clear()
            kept.update(values[metric.patient_id])
    _rows_update(model=PatientMetric, fields=list(_NEWS2_FIELDS), rows=changed)


_signs_get = attrgetter(*SIGN_KEYS)


def _metric_new(patient: Patient, values: dict) -> PatientMetric:
    """A PatientMetric (not saved) of `values`, every concrete field's attname, each already
    of its column's Python type, and its patient: what `PatientMetric(patient=..., **kw)`
    builds (no signal is connected to its init), without resolving each keyword."""
    metric = PatientMetric.__new__(PatientMetric)
    metric._state = ModelState()
    metric.__dict__.update(values)
    metric._state.fields_cache["patient"] = patient
    return metric


def _latest_signs_load(stored: dict) -> dict[str, tuple[object, datetime]]:
    """`Patient.latest_signs` ({key: {"value", "measured_at"}}) as `news2_track` keeps it."""
    return {
        key: (item["value"], datetime.fromisoformat(item["measured_at"]))
        for key, item in stored.items()
        if key in LATEST_KEYS
    }


def _latest_signs_dump(latest: dict[str, tuple[object, datetime]]) -> dict:
    """`latest` as `Patient.latest_signs` stores it. The signs of one reading share its time:
    each time is written once (by identity, not equality: the same instant at another offset
    is another text)."""
    texts: dict[int, str] = {}
    dumped = {}
    for key in LATEST_KEYS:
        newest = latest.get(key)
        if newest is not None:
            value, at = newest
            text = texts.get(id(at))
            if text is None:
                text = texts[id(at)] = at.isoformat()
            dumped[key] = {"value": value, "measured_at": text}
    return dumped


def patient_latest_reading_refresh(
    *, new: Sequence[PatientMetric], latest_signs: dict[int, dict] | None = None
) -> None:
    """Point each patient's `latest_metric` at the newest reading received: of those just
    inserted (in the order received, so with increasing ids), each patient's last; and set
    their `latest_signs` (by patient id) when given: one UPDATE.

    By arrival, not by measured_at: a monitor whose clock runs ahead would otherwise keep its
    future reading "latest" until real time caught up, hiding every reading after it. A
    re-delivered reading is not inserted again, so it never replaces a newer one; a late one
    (`reading_late`: measured long ago, back-filled) is not the patient's latest either.
    """
    newest: dict[int, int] = {}
    for metric in new:
        if not getattr(metric, "late", False):
            newest[metric.patient_id] = metric.pk
    latest_signs = latest_signs or {}
    with_signs = [(pid, pk, latest_signs[pid]) for pid, pk in newest.items() if pid in latest_signs]
    without = [(pid, pk) for pid, pk in newest.items() if pid not in latest_signs]
    if with_signs:
        _rows_update(model=Patient, fields=["latest_metric", "latest_signs"], rows=with_signs)
    if without:
        _rows_update(model=Patient, fields=["latest_metric"], rows=without)


def _rows_update(
    *, model: type[models.Model], fields: Sequence[str], rows: Sequence[tuple]
) -> None:
    """Set `fields` of many rows, each its own values: `rows` are (pk, *values), in `fields`
    order. One UPDATE ... FROM (VALUES ...) (SQLite 3.33+, PostgreSQL) per as many rows as a
    statement's parameters allow.

    Instead of QuerySet.update() with a Case/When per row, or bulk_update (the same): Django
    resolves each When as an expression, some 0.3 ms a row in Python, most of a batch's time
    when every patient of the ward has a new reading. Only the model's own table and column
    names go into the SQL text (quoted); values are parameters, prepared as Django would
    (`_db_values`: get_db_prep_save() was a third of the statement's time). On PostgreSQL
    the rows go through COPY into a temporary table (`_copy_stage`) and one UPDATE ... FROM
    it: psycopg's client-side quoting of every parameter cost more than the UPDATE.
    """
    if not rows:
        return
    quote = connection.ops.quote_name
    meta = model._meta
    columns = [meta.pk, *(meta.get_field(name) for name in fields)]
    postgresql = connection.vendor == "postgresql"
    placeholders = [f"%s::{f.db_type(connection)}" if postgresql else "%s" for f in columns]
    group = f"({', '.join(placeholders)})"
    table = quote(meta.db_table)
    assignments = ", ".join(
        f"{quote(f.column)} = v.column{i}" for i, f in enumerate(columns[1:], start=2)
    )
    head = f"UPDATE {table} SET {assignments} FROM (VALUES "  # noqa: S608 (names only)
    tail = f") AS v WHERE {table}.{quote(meta.pk.column)} = v.column1"
    if postgresql:
        # No parameters to quote one by one: the rows through COPY (`_copy_stage`).
        staged = [_db_values(columns, list(row)) for row in rows]
        with connection.cursor() as cursor:
            stage = _copy_stage(cursor, model=model, fields=columns, rows=staged)
            assignments = ", ".join(f"{quote(f.column)} = s.{quote(f.column)}" for f in columns[1:])
            pk = quote(meta.pk.column)
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM {stage} AS s "  # noqa: S608 (names only)
                f"WHERE {table}.{pk} = s.{pk}"
            )
        return
    per_statement = _max_query_params() // len(columns)
    with connection.cursor() as cursor:
        for i in range(0, len(rows), per_statement):
            chunk = rows[i : i + per_statement]
            params = [v for row in chunk for v in _db_values(columns, list(row))]
            cursor.execute(f"{head}{', '.join([group] * len(chunk))}{tail}", params)


# --- Consumer stalls ----------------------------------------------------------------------


def consumer_stall_record(*, topic: str, partition: int, offset: int, error: str) -> None:
    """Record (or renew) that the consumer is held at `offset` of this partition."""
    now = timezone.now()
    updated = ConsumerStall.objects.filter(topic=topic, partition=partition).update(
        offset=offset, error=error[:300], updated_at=now, attempts=models.F("attempts") + 1
    )
    if not updated:
        ConsumerStall.objects.get_or_create(
            topic=topic,
            partition=partition,
            defaults={"offset": offset, "error": error[:300], "since": now, "updated_at": now},
        )


def consumer_stall_clear(*, topic: str, partitions: Sequence[int]) -> int:
    """The partitions move again: forget their stalls; return how many there were."""
    deleted, _ = ConsumerStall.objects.filter(topic=topic, partition__in=partitions).delete()
    return deleted


# --- Alarms ----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value and value.isoformat()


def alarm_event_record(
    *, alarm: Alarm, type: str, reactivated: bool = False, reason: str = ""
) -> AlarmEvent:
    """Put an alarm change in the outbox, with the alarm as it is now (call inside the
    transaction that made the change). `reason`: why, when not the detector's own decision
    (e.g. "discharged"), in the payload and the log line."""
    payload = _alarm_event_payload(alarm=alarm, type=type, reactivated=reactivated, reason=reason)
    _alarm_event_log(payload)
    return AlarmEvent.objects.create(alarm=alarm, type=type, payload=payload)


def _alarm_event_payload(*, alarm: Alarm, type: str, reactivated: bool, reason: str) -> dict:
    """The outbox payload of an alarm change: the alarm as it is now (its id may still be None:
    see alarm_decisions_bulk_apply)."""
    patient = alarm.patient
    payload = {
        "event": type,
        "alarm": {
            "id": alarm.pk,
            "kind": alarm.kind,
            "priority": alarm.priority,
            "state": alarm.state,
            "message": alarm.message,
            "value": alarm.value,
            "threshold": alarm.threshold,
            "raised_at": alarm.raised_at.isoformat(),
            "activated_at": _iso(alarm.activated_at),
            "escalated_at": _iso(alarm.escalated_at),
            "acknowledged_at": _iso(alarm.acknowledged_at),
            "acknowledged_by": alarm.acknowledged_by and alarm.acknowledged_by.get_username(),
            "acknowledged_priority": alarm.acknowledged_priority or None,
            "acknowledged_message": alarm.acknowledged_message or None,
            "resolved_at": _iso(alarm.resolved_at),
        },
        "patient": {"uuid": str(patient.uuid), "name": patient.name},
        "at": timezone.now().isoformat(timespec="milliseconds"),
    }
    if reactivated:
        payload["reactivated"] = True
    if reason:
        payload["reason"] = reason
    return payload


def _alarm_event_log(payload: dict) -> None:
    """Every alarm change is a line in the log too, findable by patient (from its payload:
    the alarm as it was then)."""
    alarm, type = payload["alarm"], payload["event"]
    reactivated = payload.get("reactivated", False)
    logger.log(
        logging.WARNING if type == AlarmEvent.Type.ESCALATED or reactivated else logging.INFO,
        f"alarm {type}",
        extra={
            "patient_uuid": payload["patient"]["uuid"],
            "alarm_id": alarm["id"],
            "kind": alarm["kind"],
            "priority": alarm["priority"],
            "state": alarm["state"],
            "alarm_message": alarm["message"],
            "reactivated": reactivated,
            "reason": payload.get("reason", ""),
        },
    )


def alarm_resolve(*, alarm: Alarm, at: datetime, reason: str = "") -> AlarmEvent:
    """An open alarm -> resolved at `at`, with its outbox event (call inside the transaction
    that decides it: the detector's, a silence's end, monitoring ended, ALARM OFF, a
    discharge, whose `reason` the event carries)."""
    alarm.state, alarm.resolved_at = AlarmState.RESOLVED, at
    alarm.save(update_fields=["state", "resolved_at"])
    return alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RESOLVED, reason=reason)


def patient_alarms_resolve(*, patient: Patient, at: datetime, reason: str) -> list[AlarmEvent]:
    """Resolve every open alarm of the patient at `at`, saying why (a discharge: nobody is
    there to answer them). Call inside the transaction that decides it."""
    events = [
        alarm_resolve(alarm=alarm, at=max(at, alarm.raised_at), reason=reason)
        for alarm in Alarm.objects.select_related("patient", "acknowledged_by").filter(
            patient=patient, state__in=OPEN_ALARM_STATES
        )
    ]
    if events:
        patient_tiles_refresh(patient_ids=[patient.pk])
    return events


# Called after each batch of readings is committed with the ids of the patients who have new
# readings in it (units/ registers the one that admits patients: AUTO_ADMIT). vitals imports no
# app above it; they register here from their AppConfig.ready().
_PATIENTS_STORED_HOOKS: list[Callable[..., None]] = []


def patients_stored_hook_register(hook: Callable[..., None]) -> None:
    """`hook(patient_ids=[...], received_at=...)` after each batch stored; registered once."""
    if hook not in _PATIENTS_STORED_HOOKS:
        _PATIENTS_STORED_HOOKS.append(hook)


# The columns a decision may change on an alarm already stored.
_DECIDED_FIELDS = (
    "priority",
    "value",
    "message",
    "threshold",
    "state",
    "activated_at",
    "escalated_at",
    "resolved_at",
)


def alarm_decisions_bulk_apply(
    *, decisions: Sequence[tuple[Patient, Sequence[Decision]]]
) -> list[AlarmEvent]:
    """Write what the detector decided for a batch, each patient's decisions in order; return
    the outbox events, in the order decided.

    A change of priority is an event of its own, with the alarm as it then is. An
    acknowledgement covers the alarm at the priority acknowledged (IEC 60601-1-8): an
    acknowledged alarm whose priority rises above that is active again, unanswered from now,
    and announced as such ("reactivated"); a fall in priority re-alerts nobody. A decision
    about an alarm no longer open (e.g. deleted by an admin) changes nothing.

    One statement per table, whatever the batch holds (under alarm churn a batch of 1,000
    readings makes some 200 alarm changes, which cost 540 statements one by one): the open
    alarms the decisions change are read in one SELECT; the decisions are applied in memory
    in order (an alarm raised and resolved in the same batch is one row, its events each
    with the alarm as it then was); then the alarms stored before are updated (one UPDATE:
    `_rows_update`), the new ones inserted (one INSERT, ids returned: after the UPDATE, so
    that an alarm resolved and raised again in the batch never holds two open rows of a kind
    at once), and the events inserted (one INSERT), their payloads given the new alarms' ids.
    """
    now = timezone.now()
    changing = {p.pk for p, ds in decisions if any(d.action != "raise" for d in ds)}
    open_alarms: dict[tuple[int, str], Alarm] = {}
    if changing:
        for alarm in Alarm.objects.select_related("patient", "acknowledged_by").filter(
            patient_id__in=values_in(changing), state__in=OPEN_ALARM_STATES
        ):
            open_alarms[(alarm.patient_id, alarm.kind)] = alarm
    created: list[Alarm] = []
    updated: dict[int, Alarm] = {}
    events: list[tuple[Alarm, str, dict]] = []
    for patient, patient_decisions in decisions:
        for decision in patient_decisions:
            key = (patient.pk, decision.kind)
            if decision.action == "raise":
                alarm = Alarm(
                    patient=patient,
                    kind=decision.kind,
                    priority=decision.priority,
                    message=decision.message,
                    value=decision.value,
                    threshold=decision.threshold,
                    raised_at=decision.at,
                    activated_at=now,
                )
                created.append(alarm)
                open_alarms[key] = alarm
                type, reactivated = AlarmEvent.Type.RAISED, False
            else:
                alarm = open_alarms.get(key)
                if alarm is None:
                    continue  # closed meanwhile (e.g. deleted by an admin): nothing to change
                if decision.action == "priority":
                    alarm.priority, alarm.value, alarm.message = (
                        decision.priority,
                        decision.value,
                        decision.message,
                    )
                    alarm.threshold = decision.threshold
                    reactivated = alarm.state == AlarmState.ACKNOWLEDGED and (
                        PRIORITY_RANK[decision.priority]
                        > PRIORITY_RANK.get(alarm.acknowledged_priority, -1)
                    )
                    if reactivated:
                        alarm.state, alarm.activated_at = AlarmState.ACTIVE, now
                        alarm.escalated_at = None
                    type = AlarmEvent.Type.PRIORITY_CHANGED
                else:
                    alarm.state, alarm.resolved_at = AlarmState.RESOLVED, decision.at
                    del open_alarms[key]
                    type, reactivated = AlarmEvent.Type.RESOLVED, False
                if alarm.pk is not None:
                    updated[alarm.pk] = alarm
            payload = _alarm_event_payload(
                alarm=alarm, type=type, reactivated=reactivated, reason=""
            )
            events.append((alarm, type, payload))
    if updated:
        _rows_update(
            model=Alarm,
            fields=_DECIDED_FIELDS,
            rows=[
                (pk, *(getattr(alarm, name) for name in _DECIDED_FIELDS))
                for pk, alarm in updated.items()
            ],
        )
    _objects_insert(model=Alarm, objs=created)
    outbox = []
    for alarm, type, payload in events:
        payload["alarm"]["id"] = alarm.pk
        _alarm_event_log(payload)
        outbox.append(AlarmEvent(alarm=alarm, type=type, payload=payload))
    return _objects_insert(model=AlarmEvent, objs=outbox)


def alarm_acknowledge(
    *, alarm: Alarm, user: AbstractBaseUser, seen_priority: str | None = None
) -> Alarm:
    """active -> acknowledged, recording who and when and what was acknowledged (the
    priority and message then). Acknowledging twice changes nothing; a resolved alarm cannot be
    acknowledged. `seen_priority`: the priority the nurse was shown; an active alarm that now
    ranks above it (worse since the screen was drawn) is not acknowledged (AlarmChanged), so a
    high alarm nobody saw is never silenced by a click on a medium one. None: whatever it is."""
    with transaction.atomic():
        # The patient first, then the alarm (patients_lock: the writers' lock order).
        patients_lock(patient_ids=[alarm.patient_id])
        alarm = (
            Alarm.objects.select_for_update(of=("self",)).select_related("patient").get(pk=alarm.pk)
        )
        if alarm.state == AlarmState.RESOLVED:
            raise AlarmNotOpen(f"Alarm {alarm.pk} is already resolved.")
        if (
            alarm.state == AlarmState.ACTIVE
            and seen_priority is not None
            and PRIORITY_RANK[alarm.priority] > PRIORITY_RANK[seen_priority]
        ):
            raise AlarmChanged(
                f"Alarm {alarm.pk} is {alarm.priority.upper()} now, not {seen_priority.upper()} "
                f"as shown: {alarm.message}. Look at it again before acknowledging it."
            )
        if alarm.state == AlarmState.ACTIVE:
            alarm.state = AlarmState.ACKNOWLEDGED
            alarm.acknowledged_at, alarm.acknowledged_by = timezone.now(), user
            alarm.acknowledged_priority, alarm.acknowledged_message = alarm.priority, alarm.message
            alarm.save(
                update_fields=[
                    "state",
                    "acknowledged_at",
                    "acknowledged_by",
                    "acknowledged_priority",
                    "acknowledged_message",
                ]
            )
            alarm_event_record(alarm=alarm, type=AlarmEvent.Type.ACKNOWLEDGED)
            audit_event_record(
                user=user,
                action=AuditEvent.Action.ALARM_ACKNOWLEDGE,
                obj=alarm,
                patient=alarm.patient,
                before={"state": AlarmState.ACTIVE.value},
                after={
                    "state": AlarmState.ACKNOWLEDGED.value,
                    "priority": alarm.priority,
                    "message": alarm.message,
                },
            )
            patient_tiles_refresh(patient_ids=[alarm.patient_id])
    return alarm


def _technical_alarm_raise(
    *,
    patient: Patient,
    kind: str,
    priority: str,
    message: str,
    value: float,
    threshold: float,
    still: models.QuerySet[Patient],
) -> AlarmEvent | None:
    """Raise an alarm that no reading raises (a sweep's), unless one of its kind is open: the
    partial unique index (one open alarm per patient and kind) decides between two consumers
    sweeping at once, in a savepoint, so the loser writes nothing and goes on. `still`: the
    sweep's condition, looked at again once the patient is locked (a consumer's batch may have
    committed a reading since the sweep's SELECT): nothing is raised when the patient is no
    longer in it."""
    now = timezone.now()
    try:
        with transaction.atomic():
            patients_lock(patient_ids=[patient.pk])  # before the alarm (the lock order)
            if not still.filter(pk=patient.pk).exists():
                return None
            alarm = Alarm.objects.create(
                patient=patient,
                kind=kind,
                priority=priority,
                message=message,
                value=value,
                threshold=threshold,
                raised_at=now,
                activated_at=now,
            )
            event = alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RAISED)
            patient_tiles_refresh(patient_ids=[patient.pk])
            return event
    except IntegrityError:
        return None


def alarm_no_data_sweep(*, silent_for: timedelta, now: datetime | None = None) -> list[AlarmEvent]:
    """Raise `no_data` (medium) for every monitored patient (monitoring not ended) who has none
    open and whose newest reading was received more than `silent_for` ago, or who has no
    reading at all and was admitted (an open admission) more than `silent_for` ago: a monitor
    never connected, or every reading of it refused, is as silent as one that stopped. Several
    consumers may sweep at once: one alarm per silence all the same (`_technical_alarm_raise`).
    """
    now = now or timezone.now()
    cutoff = now - silent_for
    # units' model, reached through the relation: vitals imports no app above it.
    admission = Patient._meta.get_field("admissions").related_model
    open_admissions = admission.objects.filter(patient=OuterRef("pk"), discharged_at__isnull=True)
    # A pointer on a reading that is gone (latest_metric has no foreign-key constraint: a
    # reading deleted behind the ORM's back) is as silent as none: tested on the joined row.
    heard_of_nothing = Q(latest_metric__received_at__isnull=True)
    # Silent since the later of the last reading and the admission: a patient admitted again
    # weeks after their last reading is not paged while the monitor is being connected.
    just_admitted = Exists(open_admissions.filter(admitted_at__gte=cutoff))
    still_silent = Patient.objects.filter(monitoring_ended_at__isnull=True).filter(
        Q(Q(latest_metric__received_at__lt=cutoff), ~just_admitted)
        | Q(Exists(open_admissions.filter(admitted_at__lt=cutoff)), heard_of_nothing)
        | Q(heard_of_nothing, latest_metric_id__isnull=False)
    )
    silent = (
        still_silent.exclude(
            Exists(
                Alarm.objects.filter(
                    patient=OuterRef("pk"), kind=NO_DATA, state__in=OPEN_ALARM_STATES
                )
            )
        )
        .select_related("latest_metric")
        .annotate(admitted_at=Subquery(open_admissions.values("admitted_at")[:1]))
    )
    events = []
    for patient in silent:
        admitted_at = patient.admitted_at
        if patient.latest_metric is not None and (
            admitted_at is None or patient.latest_metric.received_at >= admitted_at
        ):
            last = patient.latest_metric.received_at
            since = f"last reading received {last.astimezone(UTC):%H:%M:%S} UTC"
        elif admitted_at is not None:
            last = patient.admitted_at
            since = f"no reading received since admission {last.astimezone(UTC):%H:%M:%S} UTC"
        else:  # its latest reading was deleted behind the ORM's back: when is unknown
            last, since = now - silent_for, "its last reading is gone"
        seconds = (now - last).total_seconds()
        event = _technical_alarm_raise(
            patient=patient,
            kind=NO_DATA,
            priority=AlarmPriority.MEDIUM,
            message=f"No data for {_duration(seconds)} ({since})",
            value=round(seconds, 1),
            threshold=silent_for.total_seconds(),
            still=still_silent,
        )
        if event is not None:
            events.append(event)
    return events


def _duration(seconds: float) -> str:
    """45 s, 3 min 20 s, 2 h 5 min."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def alarm_no_data_resolve(*, patient_ids: Sequence[int], received_at: datetime) -> list[AlarmEvent]:
    """The patients were heard from again: resolve their open `no_data` alarms, and start the
    monitoring again of those whose monitoring a clinician had ended (a monitor sends)."""
    restarted = Patient.objects.filter(
        pk__in=values_in(patient_ids), monitoring_ended_at__isnull=False
    )
    if restarted.update(monitoring_ended_at=None, monitoring_ended_by=None):
        logger.warning(
            "monitoring started again by a reading", extra={"patient_ids": list(patient_ids)}
        )
    events = []
    silences = Alarm.objects.select_related("patient").filter(
        patient_id__in=values_in(patient_ids), kind=NO_DATA, state__in=OPEN_ALARM_STATES
    )
    for alarm in silences:
        events.append(alarm_resolve(alarm=alarm, at=max(received_at, alarm.raised_at)))
    return events


def alarm_escalation_sweep(
    *, unanswered_for: timedelta, now: datetime | None = None
) -> list[AlarmEvent]:
    """Escalate every high-priority alarm active (not acknowledged) for more than
    `unanswered_for`: once per activation, whichever consumer sweeps first (a conditional
    UPDATE decides), with an `escalated` event for paging systems."""
    now = now or timezone.now()
    due = Alarm.objects.select_related("patient", "acknowledged_by").filter(
        priority=AlarmPriority.HIGH,
        state=AlarmState.ACTIVE,
        escalated_at__isnull=True,
        activated_at__lte=now - unanswered_for,
    )
    events = []
    for pk, patient_id in list(due.values_list("pk", "patient_id")):
        with transaction.atomic():
            # The patient first, then the alarm, as the consumer's batch takes them: the other
            # way round, a sweep and a batch would deadlock (patients_lock).
            patients_lock(patient_ids=[patient_id])
            # Every condition of the SELECT again: a batch may have lowered, acknowledged,
            # resolved or reactivated the alarm since.
            if not due.filter(pk=pk).update(escalated_at=now):
                continue
            # The event holds the alarm as it is now, not as the SELECT saw it.
            alarm = Alarm.objects.select_related("patient", "acknowledged_by").get(pk=pk)
            events.append(alarm_event_record(alarm=alarm, type=AlarmEvent.Type.ESCALATED))
            patient_tiles_refresh(patient_ids=[patient_id])
    return events


def patient_monitoring_end(
    *, patient: Patient, user: AbstractBaseUser | None, actor: str = ""
) -> Patient:
    """A clinician ends a patient's monitoring (the monitor is taken off): no `no_data` alarm
    is raised for them any more, the open one is resolved, and the audit trail records who, in
    one transaction. Ending it twice changes nothing. The next reading starts it again."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        if patient.monitoring_ended_at is not None:
            return patient
        now = timezone.now()
        patient.monitoring_ended_at, patient.monitoring_ended_by = now, user
        patient.save(update_fields=["monitoring_ended_at", "monitoring_ended_by"])
        for alarm in Alarm.objects.select_related("patient").filter(
            patient=patient, kind=NO_DATA, state__in=OPEN_ALARM_STATES
        ):
            alarm_resolve(alarm=alarm, at=now)
        audit_event_record(
            user=user,
            action=AuditEvent.Action.MONITORING_END,
            obj=patient,
            patient=patient,
            before={"monitoring_ended_at": None},
            after={"monitoring_ended_at": now.isoformat()},
            actor=actor,
        )
        patient_tiles_refresh(patient_ids=[patient.pk])
    return patient


# The limits proper: what a clinician sets (not who and when).
LIMIT_FIELDS = tuple(
    f.name
    for f in AlarmLimits._meta.concrete_fields
    if f.name not in ("patient", "updated_at", "updated_by")
)


def _limit_values(limits: AlarmLimits) -> dict:
    return {name: getattr(limits, name) for name in LIMIT_FIELDS}


def alarm_limits_update(
    *, patient: Patient, user: AbstractBaseUser | None, **values
) -> AlarmLimits:
    """Set a patient's alarm limits (the given fields; the others keep their value), and
    record who changed them from what to what in the audit trail, in one transaction. A
    patient without a row had the bedside defaults: those are the values before."""
    unknown = set(values) - set(LIMIT_FIELDS)
    if unknown:
        raise TypeError(f"not alarm limits: {sorted(unknown)}")
    with transaction.atomic():
        limits, _ = AlarmLimits.objects.select_for_update().get_or_create(patient=patient)
        before = _limit_values(limits)
        for name, value in values.items():
            setattr(limits, name, value)
        limits.updated_by = user
        limits.full_clean()
        limits.save()
        audit_event_record(
            user=user,
            action=AuditEvent.Action.ALARM_LIMITS_UPDATE,
            obj=limits,
            patient=patient,
            before=before,
            after=_limit_values(limits),
        )
    return limits


def alarm_limits_reset(*, patient: Patient, user: AbstractBaseUser | None) -> None:
    """Back to the bedside defaults: delete the patient's limits row (if any), recorded in the
    audit trail with the values before and the defaults after."""
    with transaction.atomic():
        limits = AlarmLimits.objects.select_for_update().filter(patient=patient).first()
        if limits is None:
            return
        audit_event_record(
            user=user,
            action=AuditEvent.Action.ALARM_LIMITS_RESET,
            obj=limits,
            patient=patient,
            before=_limit_values(limits),
            after=_limit_values(AlarmLimits(patient=patient)),
        )
        limits.delete()


# --- Patient identity --------------------------------------------------------------------------
# Here rather than in patients/services.py: they write the audit trail and the ward's snapshot
# (vitals/tile_services.py), which are vitals', and vitals.services already imports
# patients.services (the consumer's write path), so the other way round would be an import cycle.


def patient_identify(
    *, patient_uuid: uuid.UUID, name: str, mrn: str, mrn_authority: str, actor: str = ""
) -> Patient:
    """The patient with this uuid, created with this name if new; their MRN and its authority
    set when they had none (a hospital identifier, from HL7 PID-3: the ADT and PCD-01
    handlers). The name of a known patient is left as it is (as for a reading: see
    patient_bulk_get_or_create); an ADT update renames explicitly. Safe against a concurrent
    creation of the same patient. The MRN set (a new patient's too), their tile is written and
    the MRN given audited (patient.identify, before and after; `actor`: the message that gave
    it, see audit_event_record) in the same transaction: the ward shows it at once, whichever
    handler identified them, and its push is told by the audit row."""
    with transaction.atomic():
        patient = patient_bulk_get_or_create(names_by_uuid={patient_uuid: name})[patient_uuid]
        if mrn and not patient.mrn:
            # Read before the UPDATE (not loaded by patient_bulk_get_or_create: deferred).
            before = {"mrn": patient.mrn, "mrn_authority": patient.mrn_authority}
            given = Patient.objects.filter(pk=patient.pk, mrn="").update(
                mrn=mrn, mrn_authority=mrn_authority
            )
            if not given:  # another handler gave them one meanwhile: theirs stands
                patient.refresh_from_db(fields=["mrn", "mrn_authority"])
                return patient
            patient.mrn, patient.mrn_authority = mrn, mrn_authority
            audit_event_record(
                user=None,
                action=AuditEvent.Action.PATIENT_IDENTIFY,
                obj=patient,
                patient=patient,
                before=before,
                after={"mrn": mrn, "mrn_authority": mrn_authority},
                actor=actor,
            )
            patient_tiles_refresh(patient_ids=[patient.pk])
    return patient


def patient_name_confirm(*, patient: Patient, user: AbstractBaseUser | None) -> Patient:
    """Keep the patient's name: every other name monitors sent (the open conflicts) is
    dismissed, and stays so. Audited; nothing open, nothing changes."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        _patient_name_conflicts_close(
            patient=patient,
            user=user,
            resolution=PatientNameConflict.Resolution.CONFIRMED,
            action=AuditEvent.Action.PATIENT_CONFIRM_NAME,
            before_name=patient.name,
            always=False,
        )
    return patient


def patient_rename(
    *, patient: Patient, user: AbstractBaseUser | None, name: str, actor: str = ""
) -> Patient:
    """Give the patient `name` (already checked: vitals.contract.patient_name_parse), closing
    the open conflicts (the monitor's name was the right one). Audited (`actor`: see
    audit_event_record)."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        before_name, patient.name = patient.name, name
        patient.save(update_fields=["name", "updated_at"])
        _patient_name_conflicts_close(
            patient=patient,
            user=user,
            resolution=PatientNameConflict.Resolution.RENAMED,
            action=AuditEvent.Action.PATIENT_RENAME,
            before_name=before_name,
            always=True,
            actor=actor,
        )
    return patient


def patient_news2_scale_set(
    *, patient: Patient, user: AbstractBaseUser | None, hypercapnic_respiratory_failure: bool
) -> Patient:
    """Set whether the patient has a known hypercapnic respiratory failure: NEWS2 scores their
    SpO2 on scale 2 if so, from their next reading. Audited (before and after); the value they
    have already changes nothing."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update().get(pk=patient.pk)
        before = patient.hypercapnic_respiratory_failure
        if before == hypercapnic_respiratory_failure:
            return patient
        patient.hypercapnic_respiratory_failure = hypercapnic_respiratory_failure
        patient.save(update_fields=["hypercapnic_respiratory_failure", "updated_at"])
        audit_event_record(
            user=user,
            action=AuditEvent.Action.PATIENT_NEWS2_SCALE,
            obj=patient,
            patient=patient,
            before={"hypercapnic_respiratory_failure": before},
            after={"hypercapnic_respiratory_failure": hypercapnic_respiratory_failure},
        )
        patient_tiles_refresh(patient_ids=[patient.pk])
    return patient


def _patient_name_conflicts_close(
    *,
    patient: Patient,
    user: AbstractBaseUser | None,
    resolution: str,
    action: str,
    before_name: str,
    always: bool,
    actor: str = "",
) -> None:
    conflicts = PatientNameConflict.objects.filter(patient=patient, resolved_at__isnull=True)
    names = list(conflicts.select_for_update().values_list("name", flat=True))
    if not (names or always):
        return
    resolver = user if user is not None and user.pk is not None else None
    conflicts.update(resolved_at=timezone.now(), resolved_by=resolver, resolution=resolution)
    audit_event_record(
        user=user,
        action=action,
        obj=patient,
        patient=patient,
        before={"name": before_name, "names_seen": names},
        after={"name": patient.name},
        actor=actor,
    )
    patient_tiles_refresh(patient_ids=[patient.pk])


def _alarm_off_kind_check(kind: str) -> None:
    if kind not in ALARM_OFF_KINDS:
        raise AlarmOffRefused(
            f"'{kind}' cannot be switched off: only the limit alarms can "
            f"({', '.join(ALARM_OFF_KINDS)}); NEWS2 escalation, asystole and the technical "
            "alarms always sound."
        )


def _alarm_off_values(off: AlarmOff | None, kind: str) -> dict:
    if off is None:
        return {"kind": kind, "off": False}
    return {"kind": kind, "off": True, "reason": off.reason, "by": off.by_username}


def alarm_switch_off(
    *, patient: Patient, kind: str, reason: str, user: AbstractBaseUser | None
) -> AlarmOff:
    """Switch one kind of limit alarm off for a patient, with the reason (IEC 60601-1-8 ALARM
    OFF): the detector stops judging it, and an alarm of that kind still open is resolved now
    (an event on the alarms topic). Audited, in one transaction. Switching off an alarm that
    is off records the new reason."""
    _alarm_off_kind_check(kind)
    with transaction.atomic():
        # The patient first, then the alarm, as the consumer's batch takes them: the other way
        # round, a clinician's ALARM OFF and a batch would deadlock (patients_lock).
        patients_lock(patient_ids=[patient.pk])
        off = AlarmOff.objects.select_for_update().filter(patient=patient, kind=kind).first()
        before = _alarm_off_values(off, kind)
        off = off or AlarmOff(patient=patient, kind=kind)
        off.reason = reason.strip()
        off.by = user if user is not None and user.pk is not None else None
        off.by_username = user.get_username() if user is not None else ""
        off.at = timezone.now()
        off.full_clean()
        off.save()
        after = _alarm_off_values(off, kind)
        alarm = (
            Alarm.objects.select_for_update(of=("self",))
            .select_related("patient", "acknowledged_by")
            .filter(patient=patient, kind=kind, state__in=OPEN_ALARM_STATES)
            .first()
        )
        if alarm is not None:
            alarm_resolve(alarm=alarm, at=off.at)
            after["resolved_alarm"] = alarm.pk
        audit_event_record(
            user=user,
            action=AuditEvent.Action.ALARM_OFF,
            obj=off,
            patient=patient,
            before=before,
            after=after,
        )
        patient_tiles_refresh(patient_ids=[patient.pk])
    return off


def alarm_switch_on(
    *, patient: Patient, kind: str, user: AbstractBaseUser | None, actor: str = ""
) -> None:
    """Switch a kind of limit alarm back on (audited, by `user` or, for a system such as the
    hospital's ADT feed, `actor`); the detector judges it again from the next reading. An
    alarm that is on stays on, and nothing is recorded."""
    _alarm_off_kind_check(kind)
    with transaction.atomic():
        patients_lock(patient_ids=[patient.pk])  # the patient first (the lock order)
        off = AlarmOff.objects.select_for_update().filter(patient=patient, kind=kind).first()
        if off is None:
            return
        audit_event_record(
            user=user,
            action=AuditEvent.Action.ALARM_ON,
            obj=off,
            patient=patient,
            before=_alarm_off_values(off, kind),
            after=_alarm_off_values(None, kind),
            actor=actor,
        )
        off.delete()
        patient_tiles_refresh(patient_ids=[patient.pk])


_OBJECT_TYPES = {
    Alarm: "alarm",
    AlarmLimits: "alarm_limits",
    AlarmOff: "alarm_off",
    Patient: "patient",
}


def audit_event_record(
    *,
    user: AbstractBaseUser | None,
    action: str,
    obj: models.Model,
    patient: Patient,
    before: dict | None = None,
    after: dict | None = None,
    actor: str = "",
) -> AuditEvent:
    """One line of the audit trail; call it inside the transaction that makes the change.
    `actor`: who made it when no user did (a system, e.g. "HL7 ADT A01 MSG00001": the event
    and control id of the hospital's ADT message), kept as the row's username."""
    return AuditEvent.objects.create(
        user=user if user is not None and user.pk is not None else None,
        username=user.get_username() if user is not None else actor,
        action=action,
        # Another app's object (an admission) by its model's name.
        object_type=_OBJECT_TYPES.get(type(obj), obj._meta.model_name),
        object_id=str(obj.pk),
        patient=patient,
        patient_uuid=patient.uuid,
        before=before,
        after=after,
    )


def alarm_events_mark_published(*, event_ids: Sequence[int]) -> None:
    AlarmEvent.objects.filter(pk__in=event_ids, published_at__isnull=True).update(
        published_at=timezone.now()
    )


# --- Retention -------------------------------------------------------------------------------


def reading_prune_batch(*, older_than: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` readings measured before `older_than`, in one short
    transaction; return how many went. Call it until it returns 0.

    Oldest rows first by primary key, which follows insertion order: each batch finds its rows
    at the start of the table instead of searching it, with no index on measured_at to keep up
    on every insert. A patient whose latest reading goes loses `latest_metric` (null: no
    reading left in the retention window), in the same transaction, checked again once the
    patients are locked (a newer reading committed meanwhile stays). Then a plain DELETE of the
    ids (`_raw_delete`, what Django's own deletion collector runs): QuerySet.delete() would load
    every row to handle that relation itself.
    """
    old = PatientMetric.objects.filter(measured_at__lt=older_than).order_by("pk")
    with transaction.atomic():
        ids = list(old.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return 0
        emptied = list(
            Patient.objects.filter(latest_metric_id__in=ids).values_list("pk", flat=True)
        )
        if emptied:
            patients_lock(patient_ids=emptied)  # in id order, before any other lock
            # Checked again under the lock: a batch that held it may have committed a newer
            # latest reading meanwhile, which stays.
            Patient.objects.filter(pk__in=emptied, latest_metric_id__in=ids).update(
                latest_metric=None
            )
        deleted = PatientMetric.objects.filter(pk__in=ids)._raw_delete(PatientMetric.objects.db)
        patient_tiles_refresh(patient_ids=emptied)
        return deleted


def alarm_events_prune(*, older_than: datetime) -> int:
    """Delete outbox events published before `older_than` (pending ones are kept whatever
    their age: they have not reached the alarms topic yet)."""
    deleted, _ = AlarmEvent.objects.filter(published_at__lt=older_than).delete()
    return deleted
