"""Reads of vital-sign readings."""

from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from uuid import UUID

from django.db.models import QuerySet

from icu.exceptions import AlarmNotFound
from patients.models import Patient
from vitals.alarms import Limits
from vitals.models import Alarm, AlarmEvent, AlarmLimits, AuditEvent, PatientMetric


def metric_list(
    *, patient: Patient, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[PatientMetric]:
    """A patient's readings, newest first, with since <= measured_at <= until.

    Served by the (patient, measured_at) unique index.
    """
    metrics = PatientMetric.objects.filter(patient=patient)
    if since is not None:
        metrics = metrics.filter(measured_at__gte=since)
    if until is not None:
        metrics = metrics.filter(measured_at__lte=until)
    return metrics.order_by("-measured_at")


def alarm_limits_for(*, patient_ids: Iterable[int]) -> dict[int, Limits]:
    """Each patient's alarm limits; the bedside defaults for a patient without a row."""
    names = [f.name for f in fields(Limits)]
    rows = AlarmLimits.objects.filter(patient_id__in=list(patient_ids)).values("patient_id", *names)
    found = {row.pop("patient_id"): Limits(**row) for row in rows}
    return {pid: found.get(pid, Limits()) for pid in patient_ids}


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
) -> QuerySet[Alarm]:
    """Alarms, newest first, optionally of one patient, of some kinds, in some states and of
    some priorities."""
    alarms = Alarm.objects.select_related("patient", "acknowledged_by")
    if patient is not None:
        alarms = alarms.filter(patient=patient)
    if kinds:
        alarms = alarms.filter(kind__in=kinds)
    if states:
        alarms = alarms.filter(state__in=states)
    if priorities:
        alarms = alarms.filter(priority__in=priorities)
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
