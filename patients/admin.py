from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from patients.models import Patient
from vitals.models import PatientMetric

LATEST_READINGS_SHOWN = 20


class LatestReadingsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # A patient has thousands of readings; the page shows the newest few.
        return super().get_queryset().order_by("-measured_at")[:LATEST_READINGS_SHOWN]


class LatestReadingsInline(admin.TabularInline):
    model = PatientMetric
    formset = LatestReadingsFormSet
    verbose_name_plural = f"latest {LATEST_READINGS_SHOWN} readings"
    fields = readonly_fields = [
        "measured_at",
        "pulse",
        "resp_rate",
        "bp",
        "spo2",
        "temperature",
        "received_at",
    ]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["name", "uuid", "latest_reading_at", "created_at"]
    list_select_related = ["latest_metric"]
    search_fields = ["name", "=uuid"]
    readonly_fields = ["uuid", "created_at", "updated_at", "latest_metric"]
    inlines = [LatestReadingsInline]

    @admin.display(description="latest reading", ordering="latest_metric__measured_at")
    def latest_reading_at(self, patient: Patient):
        return patient.latest_metric.measured_at if patient.latest_metric else None
