"""Writes of vital-sign readings."""

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, models, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from icu.exceptions import AlarmNotOpen, AlarmOffRefused
from patients.models import Patient
from patients.services import patient_bulk_get_or_create
from vitals.alarms import ALARM_OFF_KINDS, Decision
from vitals.contract import Reading
from vitals.models import (
    OPEN_ALARM_STATES,
    Alarm,
    AlarmEvent,
    AlarmLimits,
    AlarmOff,
    AlarmState,
    AuditEvent,
    PatientMetric,
)
from vitals.news2 import news2_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int
    patients: int
    # The rows this call inserted, in batch order: what alarm detection looks at.
    new: list[PatientMetric] = field(default_factory=list)


def metric_bulk_store(
    *, readings: Sequence[Reading], received_at: datetime | None = None
) -> StoreResult:
    """Store a batch of readings in one transaction: exactly once, whatever is re-delivered.

    Duplicates inside the batch are dropped first (the first copy wins). Readings already in
    the database are skipped by the unique (patient, measured_at) index: one INSERT ... ON
    CONFLICT DO NOTHING RETURNING (see `_metric_insert`), which also says exactly which rows
    went in, even when another consumer wrote some of them a moment before.
    Each patient's `latest_metric` is brought up to date in the same transaction, so that the
    ward list never points at a reading that is not committed.
    """
    unique: dict[tuple, Reading] = {}
    for reading in readings:
        unique.setdefault((reading.patient_uuid, reading.measured_at), reading)
    if not unique:
        return StoreResult(stored=0, duplicates=len(readings), patients=0)
    received_at = received_at or timezone.now()

    with transaction.atomic():
        names = {r.patient_uuid: r.patient_name for r in unique.values()}
        patients = patient_bulk_get_or_create(names_by_uuid=names)
        candidates = [_metric(r, patients[r.patient_uuid], received_at) for r in unique.values()]
        new = _metric_insert(candidates)
        touched = {m.patient_id for m in new}
        if touched:
            patient_latest_metric_refresh(patient_ids=touched)
    return StoreResult(
        stored=len(new), duplicates=len(readings) - len(new), patients=len(patients), new=new
    )


# The columns the write path inserts, and how to read them off a PatientMetric in one call.
_INSERT_FIELDS = [f for f in PatientMetric._meta.concrete_fields if not f.primary_key]
_INSERT_VALUES = attrgetter(*(f.attname for f in _INSERT_FIELDS))
_DATETIME_COLUMNS = [i for i, f in enumerate(_INSERT_FIELDS) if isinstance(f, models.DateTimeField)]
_KEY_COLUMNS = (
    _INSERT_FIELDS.index(PatientMetric._meta.get_field("patient")),
    _INSERT_FIELDS.index(PatientMetric._meta.get_field("measured_at")),
)


def _metric_db_values(metric: PatientMetric) -> list:
    """The row to INSERT for a metric, in `_INSERT_FIELDS` order.

    The hot path of the consumer, so not Field.get_db_prep_save() on every value (a third of
    the consumer's time): `_metric` builds every value from a validated Reading with its
    column's Python type already, which those calls would return unchanged, except for the
    datetimes, which go through the backend's own adaptation (text in UTC on SQLite). A test
    holds this equal to get_db_prep_save() for every column.
    """
    values = list(_INSERT_VALUES(metric))
    adapt = connection.ops.adapt_datetimefield_value
    for i in _DATETIME_COLUMNS:
        values[i] = adapt(values[i])
    return values


def _metric_insert(candidates: list[PatientMetric]) -> list[PatientMetric]:
    """INSERT the candidates, skipping those already stored; return those inserted (with their
    ids), in the candidates' order.

    One statement that says which rows it inserted (ON CONFLICT DO NOTHING RETURNING, SQLite
    3.35+ and PostgreSQL), instead of bulk_create, which cannot tell which rows it skipped and
    costs more in Python than the database takes to write:
    - PostgreSQL: INSERT ... SELECT FROM unnest(<one array per column>), one statement and 15
      parameters whatever the batch size;
    - SQLite: INSERT ... VALUES (...), (...), as many rows per statement as its limit on
      parameters allows (32,766 since SQLite 3.32, not the 999 Django assumes).
    Only the model's own table and column names go into the SQL text (quoted); values are
    parameters.
    """
    rows = [_metric_db_values(m) for m in candidates]
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
            arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in _INSERT_FIELDS)
            columns = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(f"{head}SELECT * FROM unnest({arrays}){tail}", columns)  # noqa: S608
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


def _max_query_params() -> int:
    """Parameters one statement may have: SQLite's run-time limit (Django assumes 999, the
    default before SQLite 3.32); Django's figure elsewhere."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params or 65_535


def _metric(reading: Reading, patient: Patient, received_at: datetime) -> PatientMetric:
    metric = PatientMetric(
        patient=patient,
        measured_at=reading.measured_at,
        pulse=reading.pulse,
        resp_rate=reading.resp_rate,
        systolic=reading.systolic,
        diastolic=reading.diastolic,
        spo2=reading.spo2,
        temperature=reading.temperature,
        on_oxygen=reading.on_oxygen,
        consciousness=reading.consciousness,
        artefact=reading.artefact or "",
        spo2_scale=patient.spo2_scale,
        received_at=received_at,
    )
    # Scored once: the alarm engine reads the same result from `metric.news2`.
    metric.news2 = score = news2_of(metric, spo2_scale=metric.spo2_scale)
    if score is not None:
        metric.news2_score, metric.news2_risk = score.score, score.risk
    return metric


def patient_latest_metric_refresh(*, patient_ids: set[int]) -> None:
    """Point each patient's `latest_metric` at their newest reading (one UPDATE).

    Computed from the table, not from the batch, so it is right whatever order readings
    arrive in (a late or replayed reading never replaces a newer one).
    """
    newest = (
        PatientMetric.objects.filter(patient_id=OuterRef("pk"))
        .order_by("-measured_at")
        .values("pk")[:1]
    )
    Patient.objects.filter(pk__in=patient_ids).update(latest_metric=Subquery(newest))


# --- Alarms ----------------------------------------------------------------------------------


def alarm_event_record(*, alarm: Alarm, type: str) -> AlarmEvent:
    """Put an alarm change in the outbox, with the alarm as it is now (call inside the
    transaction that made the change)."""
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
            "acknowledged_at": alarm.acknowledged_at and alarm.acknowledged_at.isoformat(),
            "acknowledged_by": alarm.acknowledged_by and alarm.acknowledged_by.get_username(),
            "resolved_at": alarm.resolved_at and alarm.resolved_at.isoformat(),
        },
        "patient": {"uuid": str(patient.uuid), "name": patient.name},
        "at": timezone.now().isoformat(timespec="milliseconds"),
    }
    # Every alarm change is a line in the log too, findable by patient.
    logger.info(
        f"alarm {type}",
        extra={
            "patient_uuid": str(patient.uuid),
            "alarm_id": alarm.pk,
            "kind": alarm.kind,
            "priority": alarm.priority,
            "state": alarm.state,
            "alarm_message": alarm.message,
        },
    )
    return AlarmEvent.objects.create(alarm=alarm, type=type, payload=payload)


def alarm_decisions_apply(*, patient: Patient, decisions: Sequence[Decision]) -> list[AlarmEvent]:
    """Write what the detector decided for one patient; return the outbox events."""
    events = []
    for decision in decisions:
        if decision.action == "raise":
            alarm = Alarm.objects.create(
                patient=patient,
                kind=decision.kind,
                priority=decision.priority,
                message=decision.message,
                value=decision.value,
                threshold=decision.threshold,
                raised_at=decision.at,
            )
            events.append(alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RAISED))
            continue
        alarm = (
            Alarm.objects.select_related("patient", "acknowledged_by")
            .filter(patient=patient, kind=decision.kind, state__in=OPEN_ALARM_STATES)
            .first()
        )
        if alarm is None:
            continue  # closed meanwhile (e.g. deleted by an admin): nothing left to change
        if decision.action == "escalate":
            alarm.priority, alarm.value, alarm.message = (
                decision.priority,
                decision.value,
                decision.message,
            )
            alarm.threshold = decision.threshold
            alarm.save(update_fields=["priority", "value", "message", "threshold"])
            events.append(alarm_event_record(alarm=alarm, type=AlarmEvent.Type.ESCALATED))
        else:
            alarm.state, alarm.resolved_at = AlarmState.RESOLVED, decision.at
            alarm.save(update_fields=["state", "resolved_at"])
            events.append(alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RESOLVED))
    return events


def alarm_acknowledge(*, alarm: Alarm, user: AbstractBaseUser) -> Alarm:
    """active -> acknowledged, recording who and when. Acknowledging twice changes nothing;
    a resolved alarm cannot be acknowledged."""
    with transaction.atomic():
        alarm = Alarm.objects.select_for_update().select_related("patient").get(pk=alarm.pk)
        if alarm.state == AlarmState.RESOLVED:
            raise AlarmNotOpen(f"Alarm {alarm.pk} is already resolved.")
        if alarm.state == AlarmState.ACTIVE:
            alarm.state = AlarmState.ACKNOWLEDGED
            alarm.acknowledged_at, alarm.acknowledged_by = timezone.now(), user
            alarm.save(update_fields=["state", "acknowledged_at", "acknowledged_by"])
            alarm_event_record(alarm=alarm, type=AlarmEvent.Type.ACKNOWLEDGED)
            audit_event_record(
                user=user,
                action=AuditEvent.Action.ALARM_ACKNOWLEDGE,
                obj=alarm,
                patient=alarm.patient,
                before={"state": AlarmState.ACTIVE.value},
                after={"state": AlarmState.ACKNOWLEDGED.value},
            )
    return alarm


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
            alarm.state, alarm.resolved_at = AlarmState.RESOLVED, off.at
            alarm.save(update_fields=["state", "resolved_at"])
            alarm_event_record(alarm=alarm, type=AlarmEvent.Type.RESOLVED)
            after["resolved_alarm"] = alarm.pk
        audit_event_record(
            user=user,
            action=AuditEvent.Action.ALARM_OFF,
            obj=off,
            patient=patient,
            before=before,
            after=after,
        )
    return off


def alarm_switch_on(*, patient: Patient, kind: str, user: AbstractBaseUser | None) -> None:
    """Switch a kind of limit alarm back on (audited); the detector judges it again from the
    next reading. An alarm that is on stays on, and nothing is recorded."""
    _alarm_off_kind_check(kind)
    with transaction.atomic():
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
        )
        off.delete()


_OBJECT_TYPES = {Alarm: "alarm", AlarmLimits: "alarm_limits", AlarmOff: "alarm_off"}


def audit_event_record(
    *,
    user: AbstractBaseUser | None,
    action: str,
    obj: Alarm | AlarmLimits | AlarmOff,
    patient: Patient,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """One line of the audit trail; call it inside the transaction that makes the change."""
    return AuditEvent.objects.create(
        user=user if user is not None and user.pk is not None else None,
        username=user.get_username() if user is not None else "",
        action=action,
        object_type=_OBJECT_TYPES[type(obj)],
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


def metric_prune_batch(*, older_than: datetime, batch_size: int) -> int:
    """Delete up to `batch_size` readings measured before `older_than`, in one short
    transaction; return how many went. Call it until it returns 0.

    Oldest rows first by primary key, which follows insertion order: each batch finds its rows
    at the start of the table instead of searching it, with no index on measured_at to keep up
    on every insert. A patient whose latest reading goes loses `latest_metric` (null: no
    reading left in the retention window), in the same transaction. Then a plain DELETE of the
    ids (`_raw_delete`, what Django's own deletion collector runs): QuerySet.delete() would load
    every row to handle that relation itself.
    """
    old = PatientMetric.objects.filter(measured_at__lt=older_than).order_by("pk")
    with transaction.atomic():
        ids = list(old.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return 0
        Patient.objects.filter(latest_metric_id__in=ids).update(latest_metric=None)
        return PatientMetric.objects.filter(pk__in=ids)._raw_delete(PatientMetric.objects.db)


def alarm_events_prune(*, older_than: datetime) -> int:
    """Delete outbox events published before `older_than` (pending ones are kept whatever
    their age: they have not reached the alarms topic yet)."""
    deleted, _ = AlarmEvent.objects.filter(published_at__lt=older_than).delete()
    return deleted
