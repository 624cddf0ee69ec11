"""Reads of the central station's push (ward/events.py): the rows after a floor.

Three tables' new rows are what the pages show changing: readings (PatientMetric), alarm
changes (AlarmEvent: raised, re-prioritized, acknowledged, escalated, resolved) and the
clinicians' and the units' changes (AuditEvent: admissions, transfers, discharges, names,
limits, alarms switched off). Each read is a range scan of a primary key: cheap at any size.
Which of those rows are news (new, or committed late below the highest id seen) is the
watcher's to say (ward/events.py, ChangeTrail).
"""

from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.db.models import Max
from django.http import HttpRequest

from core.permissions import route_permits
from vitals.models import AlarmEvent, AuditEvent, PatientMetric


@dataclass(frozen=True)
class ChangeMarks:
    reading: int
    alarm_event: int
    audit_event: int


def change_marks_now() -> ChangeMarks:
    """The highest id of each table as it stands."""
    return ChangeMarks(
        reading=PatientMetric.objects.aggregate(m=Max("pk"))["m"] or 0,
        alarm_event=AlarmEvent.objects.aggregate(m=Max("pk"))["m"] or 0,
        audit_event=AuditEvent.objects.aggregate(m=Max("pk"))["m"] or 0,
    )


ChangeRows = dict[str, list[tuple[int, str | None]]]


def change_rows_after(*, floors: ChangeMarks) -> ChangeRows:
    """Each table's rows with an id above its floor, as (id, the patient's uuid as text or
    None): {"reading": [...], "alarm_event": [...], "audit_event": [...]}. Three queries."""
    readings = PatientMetric.objects.filter(pk__gt=floors.reading).values_list(
        "pk", "patient__uuid"
    )
    alarms = AlarmEvent.objects.filter(pk__gt=floors.alarm_event).values_list(
        "pk", "alarm__patient__uuid"
    )
    audits = AuditEvent.objects.filter(pk__gt=floors.audit_event).values_list("pk", "patient_uuid")
    return {
        name: [(pk, None if uuid is None else str(uuid)) for pk, uuid in rows.order_by()]
        for name, rows in (("reading", readings), ("alarm_event", alarms), ("audit_event", audits))
    }


def stream_user_may_read(
    *, session_key: str | None, user_pk: object, routes: tuple[str, ...]
) -> bool:
    """Whether the session a stream was opened with still belongs to that user, and the user
    may still read every route of the page: the session is still in its store (not logged
    out, not expired), the user active, their password the one the session was opened with
    (Django's session hash: a change signs every other session out), and their role allows the
    routes. Read afresh, as the next request of that session would be (get_user; a session
    whose hash no longer matches is flushed, as that request would flush it)."""
    if not session_key:
        return False
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    return (
        user.is_authenticated
        and user.pk == user_pk
        and all(route_permits(user=user, route=route) for route in routes)
    )
