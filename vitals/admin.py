from django.contrib import admin
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from vitals.models import (
    Alarm,
    AlarmEvent,
    AlarmOff,
    AlarmState,
    AuditEvent,
    PatientMetric,
    reading_time,
)
from vitals.serializers import reading_bp
from vitals.services import alarm_acknowledge
from vitals.signs import SIGNS


class ReadingColumns:
    """The columns a reading shows in the admin wherever it is listed (its own list, the
    patient page's latest readings): SIGN_COLUMNS are its signs."""

    # Blood pressure as one "120/80" column, like the API's `bp`; the admin's dash for a value
    # not there unless both halves were measured (written here: an inline's read-only callable
    # would show None).
    @admin.display(description="BP")
    def bp_display(self, metric: PatientMetric) -> str:
        return reading_bp(metric) or "-"

    @admin.display(description="measured at", ordering="measured_at")
    def measured_at_display(self, metric: PatientMetric) -> str:
        return reading_time(metric.measured_at)

    # A word: Django's red cross for False reads as an error, and air is the normal case.
    @admin.display(description="air or oxygen", ordering="on_oxygen")
    def air_or_oxygen(self, metric: PatientMetric) -> str:
        return "oxygen" if metric.on_oxygen else "air"


def _sign_columns() -> list[str]:
    """A column per sign of vitals/signs.py, in its order; one for blood pressure's halves."""
    columns: list[str] = []
    for sign in SIGNS:
        name = "bp_display" if sign.wire == "bp" else sign.key
        if name not in columns:
            columns.append(name)
    return columns


SIGN_COLUMNS = _sign_columns()


@admin.register(PatientMetric)
class PatientMetricAdmin(ReadingColumns, ReadOnlyAdmin):
    """Readings come from devices through the consumer: the admin shows them, never edits them."""

    list_display = [
        "measured_at_display",
        "patient",
        *SIGN_COLUMNS,
        "air_or_oxygen",
        "consciousness",
        "news2_score",
        "received_at",
    ]
    list_select_related = ["patient"]
    list_filter = ["measured_at"]
    date_hierarchy = "measured_at"
    search_fields = ["patient__name", "=patient__uuid"]
    ordering = ["-measured_at"]
    raw_id_fields = ["patient"]
    # COUNT(*) over millions of readings on every page is slow and not needed to browse.
    show_full_result_count = False


@admin.register(Alarm)
class AlarmAdmin(ReadOnlyAdmin):
    """Alarms are raised and resolved by the consumer; people acknowledge them (action)."""

    list_display = [
        "raised_at",
        "patient",
        "priority",
        "kind",
        "state",
        "message",
        "acknowledged_by",
        "resolved_at",
    ]
    list_filter = ["state", "priority", "kind"]
    list_select_related = ["patient", "acknowledged_by"]
    search_fields = ["patient__name", "=patient__uuid"]
    date_hierarchy = "raised_at"
    actions = ["acknowledge"]

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("vitals.acknowledge_alarm")

    # Through the API's service: the same checks, outbox event and audit trail.
    @admin.action(description="Acknowledge selected active alarms", permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset) -> None:
        active = list(queryset.filter(state=AlarmState.ACTIVE))
        for alarm in active:
            alarm_acknowledge(alarm=alarm, user=request.user)
        self.message_user(request, f"Acknowledged {len(active)} alarm(s).")


@admin.register(AlarmOff)
class AlarmOffAdmin(ReadOnlyAdmin):
    """The limit alarms switched off (ALARM OFF), with who, when and why. Switched off and on
    through the API or the patient page only, where the switch is audited."""

    list_display = ["patient", "kind", "reason", "by_username", "at"]
    list_filter = ["kind"]
    list_select_related = ["patient"]
    search_fields = ["patient__name", "=patient__uuid", "by_username"]


@admin.register(AlarmEvent)
class AlarmEventAdmin(ReadOnlyAdmin):
    """The outbox of the alarms topic: what was (or is still to be) published."""

    list_display = ["id", "type", "alarm", "created_at", "published_at"]
    list_filter = ["type", ("published_at", admin.EmptyFieldListFilter)]
    list_select_related = ["alarm"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Who acknowledged which alarm, who changed which alarm limits from what to what.
    Written by the services only; nobody edits or deletes it here."""

    list_display = ["at", "action", "username", "object_type", "object_id", "patient"]
    list_filter = ["action", "object_type"]
    list_select_related = ["patient"]
    search_fields = ["username", "=patient_uuid", "patient__name", "=object_id"]
    date_hierarchy = "at"
    fields = [
        "at",
        "action",
        "user",
        "username",
        "object_type",
        "object_id",
        "patient",
        "patient_uuid",
        "before",
        "after",
    ]


# The patient's admin page shows its latest readings and alarm limits: monitoring, so it lives
# in vitals (vitals/patient_admin.py), above patients; registered with this module.
from vitals import patient_admin  # noqa: E402, F401
