from django.contrib import admin
from django.http import HttpRequest

from vitals.models import PatientMetric


@admin.register(PatientMetric)
class PatientMetricAdmin(admin.ModelAdmin):
    """Readings come from devices through the consumer: the admin shows them, never edits them."""

    list_display = [
        "measured_at",
        "patient",
        "pulse",
        "resp_rate",
        "bp",
        "spo2",
        "temperature",
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PatientMetric | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PatientMetric | None = None) -> bool:
        return False
