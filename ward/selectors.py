"""Reads of the central station's push (ward/events.py): what changed since a mark.

A mark is the highest id of the three tables whose new rows are what the pages show changing:
readings (PatientMetric), alarm changes (AlarmEvent: raised, re-prioritized, acknowledged,
escalated, resolved) and the clinicians' and the units' changes (AuditEvent: admissions,
transfers, discharges, names, limits, alarms switched off). Each read is a range scan of a
primary key: cheap at any size.
"""

from dataclasses import dataclass

from django.db.models import Max

from vitals.models import AlarmEvent, AuditEvent, PatientMetric


@dataclass(frozen=True)
class ChangeMarks:
    reading: int
    alarm_event: int
    audit_event: int


def change_marks_now() -> ChangeMarks:
    """The marks as the tables stand: changes are those after them."""
    return ChangeMarks(
        reading=PatientMetric.objects.aggregate(m=Max("pk"))["m"] or 0,
        alarm_event=AlarmEvent.objects.aggregate(m=Max("pk"))["m"] or 0,
        audit_event=AuditEvent.objects.aggregate(m=Max("pk"))["m"] or 0,
    )


def changes_after(*, marks: ChangeMarks) -> tuple[ChangeMarks, set[str]]:
    """The patients (uuids, as text) with a reading, an alarm change or an audited change after
    `marks`, and the marks past them. Three queries, one row per patient changed.

    A row whose id was given out before a mark but committed after it (two consumers' batches
    on PostgreSQL) is not seen: the page's fallback poll shows it, or the patient's next
    reading a second later."""
    readings = PatientMetric.objects.filter(pk__gt=marks.reading).order_by().values("patient__uuid")
    readings = readings.annotate(last=Max("pk")).values_list("patient__uuid", "last")
    alarms = (
        AlarmEvent.objects.filter(pk__gt=marks.alarm_event)
        .order_by()
        .values("alarm__patient__uuid")
    )
    alarms = alarms.annotate(last=Max("pk")).values_list("alarm__patient__uuid", "last")
    audits = AuditEvent.objects.filter(pk__gt=marks.audit_event).order_by().values("patient_uuid")
    audits = audits.annotate(last=Max("pk")).values_list("patient_uuid", "last")
    changed: set[str] = set()
    new = {}
    for name, rows in (("reading", readings), ("alarm_event", alarms), ("audit_event", audits)):
        last = getattr(marks, name)
        for patient_uuid, row_last in rows:
            if patient_uuid is not None:
                changed.add(str(patient_uuid))
            last = max(last, row_last)
        new[name] = last
    return ChangeMarks(**new), changed
