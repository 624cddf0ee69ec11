from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from patients.models import Patient, PatientNameConflict
from vitals.admin import SIGN_COLUMNS, ReadingColumns
from vitals.models import AlarmLimits, PatientMetric
from vitals.services import (
    LIMIT_FIELDS,
    alarm_limits_reset,
    alarm_limits_update,
    patient_monitoring_end,
    patient_news2_scale_set,
    patient_rename,
)
from vitals.signs import SIGNS
from vitals.tile_services import patient_tiles_refresh

LATEST_READINGS_SHOWN = 20


class LatestReadingsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # A patient has thousands of readings; the page shows the newest few.
        return (
            super()
            .get_queryset()
            .select_related("patient")  # each row's title names the patient
            .order_by("-measured_at")[:LATEST_READINGS_SHOWN]
        )


class LatestReadingsInline(ReadingColumns, admin.TabularInline):
    model = PatientMetric
    formset = LatestReadingsFormSet
    verbose_name_plural = f"latest {LATEST_READINGS_SHOWN} readings"
    fields = readonly_fields = [
        "measured_at_display",
        *SIGN_COLUMNS,
        "air_or_oxygen",
        "consciousness",
        "news2_score",
        "artefact",
        "received_at",
    ]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False


class AlarmLimitsInline(admin.StackedInline):
    """Editable here as in the API, with the same permission (vitals.change_alarmlimits, for
    setting them the first time and for deleting them, i.e. back to the bedside defaults too)
    and the same service (PatientAdmin.save_formset), so the audit trail has every change."""

    model = AlarmLimits
    can_delete = True
    readonly_fields = ["updated_at", "updated_by"]
    # A row per sign of vitals/signs.py with limits: its low and high side by side.
    fieldsets = [
        (None, {"fields": ["delay_readings"]}),
        (
            "Limits",
            {"fields": [tuple(limit.kind for limit in s.limits) for s in SIGNS if s.limits]},
        ),
        (None, {"fields": ["updated_at", "updated_by"]}),
    ]

    def has_add_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return request.user.has_perm("vitals.change_alarmlimits")

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return request.user.has_perm("vitals.change_alarmlimits")

    def has_delete_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return request.user.has_perm("vitals.change_alarmlimits")


class NameConflictsInline(admin.TabularInline):
    """Other names monitors sent for this patient: shown, never edited here (confirming or
    renaming is the clinicians', through the API and the patient page, audited)."""

    model = PatientNameConflict
    verbose_name_plural = "names sent by monitors (identity conflicts)"
    fields = readonly_fields = [
        "name",
        "first_seen_at",
        "last_seen_at",
        "count",
        "resolved_at",
        "resolved_by",
        "resolution",
    ]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["name", "mrn", "uuid", "latest_news2", "latest_reading_at", "created_at"]
    list_select_related = ["latest_metric"]
    list_filter = [
        "hypercapnic_respiratory_failure",
        ("monitoring_ended_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["name", "=uuid", "=mrn"]
    # The MRN comes from the hospital (HL7 PID-3) and the device gateway derives the patient's
    # uuid from it: edited here, the next ADT message would make a second patient.
    readonly_fields = [
        "uuid",
        "mrn",
        "mrn_authority",
        "created_at",
        "updated_at",
        "latest_metric",
        "monitoring_ended_at",
        "monitoring_ended_by",
    ]
    actions = ["end_monitoring"]
    inlines = [NameConflictsInline, AlarmLimitsInline, LatestReadingsInline]

    def save_model(self, request: HttpRequest, obj: Patient, form, change: bool) -> None:
        # A name or NEWS2 scale changed goes through the API's services, audited as every
        # other change made here (a rename closes the open name conflicts, as in the API);
        # then the form's other fields are saved as the admin does, and the ward's snapshot
        # written (the name and the scale are on it). All in the admin's one transaction.
        if change and "name" in form.changed_data:
            patient_rename(patient=obj, user=request.user, name=obj.name)
        if change and "hypercapnic_respiratory_failure" in form.changed_data:
            patient_news2_scale_set(
                patient=obj,
                user=request.user,
                hypercapnic_respiratory_failure=obj.hypercapnic_respiratory_failure,
            )
        super().save_model(request, obj, form, change)
        patient_tiles_refresh(patient_ids=[obj.pk])

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        # Nothing saved here: save(commit=False) only sorts the forms into new, changed and
        # deleted objects (the admin's history message reads them). The alarm limits go
        # through the API's services, which record the audit trail; the readings are read-only.
        formset.save(commit=False)
        if formset.model is not AlarmLimits:
            return
        patient = form.instance
        for _ in formset.deleted_objects:
            alarm_limits_reset(patient=patient, user=request.user)
        changed = [obj for obj, _ in formset.changed_objects]
        for limits in [*formset.new_objects, *changed]:
            values = {name: getattr(limits, name) for name in LIMIT_FIELDS}
            alarm_limits_update(patient=patient, user=request.user, **values)

    @admin.action(
        description="End the monitoring of the selected patients (no no_data alarm)",
        permissions=["end_monitoring"],
    )
    def end_monitoring(self, request: HttpRequest, queryset) -> None:
        # One patient at a time through the API's service: audited, open no_data resolved.
        patients = list(queryset)
        for patient in patients:
            patient_monitoring_end(patient=patient, user=request.user)
        self.message_user(request, f"Monitoring ended for {len(patients)} patient(s).")

    def has_end_monitoring_permission(self, request: HttpRequest) -> bool:
        # As the API's route: the right to change what alarms sound (core/permissions.py).
        return request.user.has_perm("vitals.change_alarmlimits")

    @admin.display(description="NEWS2", ordering="latest_metric__news2_score")
    def latest_news2(self, patient: Patient):
        return patient.latest_metric.news2_score if patient.latest_metric else None

    @admin.display(description="latest reading", ordering="latest_metric__measured_at")
    def latest_reading_at(self, patient: Patient):
        return patient.latest_metric.measured_at if patient.latest_metric else None
