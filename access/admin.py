from django.contrib import admin

from access.models import PatientAccess
from core.admin import ReadOnlyAdmin


@admin.register(PatientAccess)
class PatientAccessAdmin(ReadOnlyAdmin):
    """Who read which patient's data. Written after each read; nobody edits or deletes it."""

    list_display = ["first_at", "last_at", "username", "patient", "patient_uuid", "kind", "count"]
    list_filter = ["kind", "username", "patient"]
    list_select_related = ["patient"]
    search_fields = ["username", "=patient_uuid", "patient__name"]
    date_hierarchy = "first_at"
    fields = [*list_display[:5], "user", "kind", "window_start", "count"]
